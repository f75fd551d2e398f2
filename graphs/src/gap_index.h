// Private: the idle-gap index of one device for insertion-based scheduling.
//
// Note [Indexed gap search]
// A device's free time is a set of disjoint gaps [start, end), the last one
// open-ended. HEFT's insertion policy asks for the earliest s >= ready with
// [s, s + d) inside a gap. A linear scan over gaps makes HEFT O(n^2 p); here
// the gaps sit in a treap keyed by start, each subtree annotated with its
// largest gap length, so the query is: (1) the gap containing `ready`
// (predecessor search), else (2) the leftmost gap starting after `ready` with
// length >= d (descend where the annotation allows). Both O(log n) expected.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace stepgraph::graphs::detail {

class GapIndex {
 public:
  GapIndex() { root_ = make(0.0, kInf); }

  /// Earliest start >= ready of an interval of length d that fits a gap.
  [[nodiscard]] double earliest_start(double ready, double d) const {
    // Fast path: at or after the start of the open-ended last gap (the
    // common case when nodes arrive roughly in time order).
    if (ready >= tail_start_) return ready;
    int g = floor_gap(ready);
    if (g != kNil && ready + d <= at(g).end + kEps) return ready;
    int f = first_fit(root_, ready, d);
    return at(f).start;  // the open-ended last gap always fits
  }

  /// Marks [s, s + d) busy; it must lie inside one gap.
  void occupy(double s, double d) {
    if (d <= 0) return;
    int g = floor_gap(s + kEps);
    const double gs = at(g).start, ge = at(g).end;
    root_ = erase(root_, gs);
    if (s - gs > kEps) root_ = insert(root_, make(gs, s));
    if (ge - (s + d) > kEps) root_ = insert(root_, make(s + d, ge));
    if (ge == kInf) tail_start_ = s + d;
  }

  [[nodiscard]] std::size_t gap_count() const { return size_(root_); }

  /// Drops every gap that ends at or before `t`. Sound when no later query
  /// has ready < t (Note [Forgetting the past]): such a gap can never hold
  /// [s, s + d) with s >= ready. Keeps the trees -- and HEFT's working set --
  /// the size of the schedule's live window instead of the whole schedule.
  void forget_before(double t) {
    if (root_ == kNil || t <= forgotten_) return;
    forgotten_ = t;
    const int g = floor_gap(t);
    // Gaps are disjoint, so those ending by t are exactly those starting
    // before t, except the one containing t (if any).
    const double key = (g != kNil && at(g).end > t) ? at(g).start : t;
    int l, r;
    split(root_, key, l, r);
    root_ = r;
    // Free the dropped subtree (each node once over the index's life).
    stack_.clear();
    if (l != kNil) stack_.push_back(l);
    while (!stack_.empty()) {
      const int x = stack_.back();
      stack_.pop_back();
      if (at(x).left != kNil) stack_.push_back(at(x).left);
      if (at(x).right != kNil) stack_.push_back(at(x).right);
      free_.push_back(x);
    }
  }

 private:
  static constexpr int kNil = -1;
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  static constexpr double kEps = 1e-9;

  // One cache line per treap node (array of structs): a query touches
  // O(log n) nodes, each once.
  struct TNode {
    double start, end, maxlen;
    std::uint32_t prio;
    int left, right;
  };
  std::vector<TNode> t_;
  std::vector<int> free_;
  int root_ = kNil;
  double tail_start_ = 0;  // start of the open-ended last gap
  double forgotten_ = 0;   // forget_before's last bound
  std::vector<int> stack_;
  std::uint64_t rng_ = 0x9E3779B97F4A7C15ull;

  int make(double s, double e) {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    const TNode node{s, e, e - s, static_cast<std::uint32_t>(rng_), kNil, kNil};
    if (!free_.empty()) {
      const int id = free_.back();
      free_.pop_back();
      t_[static_cast<std::size_t>(id)] = node;
      return id;
    }
    t_.push_back(node);
    return static_cast<int>(t_.size() - 1);
  }
  TNode& at(int i) { return t_[static_cast<std::size_t>(i)]; }
  const TNode& at(int i) const { return t_[static_cast<std::size_t>(i)]; }
  double ml(int t) const { return t == kNil ? -1.0 : at(t).maxlen; }
  std::size_t size_(int t) const { return t == kNil ? 0 : 1 + size_(at(t).left) + size_(at(t).right); }
  void pull(int t) {
    double m = at(t).end - at(t).start;
    if (ml(at(t).left) > m) m = ml(at(t).left);
    if (ml(at(t).right) > m) m = ml(at(t).right);
    at(t).maxlen = m;
  }
  // Split into (< key, >= key).
  void split(int t, double key, int& l, int& r) {
    if (t == kNil) {
      l = r = kNil;
      return;
    }
    if (at(t).start < key) {
      split(at(t).right, key, at(t).right, r);
      l = t;
    } else {
      split(at(t).left, key, l, at(t).left);
      r = t;
    }
    pull(t);
  }
  int merge(int a, int b) {
    if (a == kNil) return b;
    if (b == kNil) return a;
    if (at(a).prio > at(b).prio) {
      at(a).right = merge(at(a).right, b);
      pull(a);
      return a;
    }
    at(b).left = merge(a, at(b).left);
    pull(b);
    return b;
  }
  int insert(int t, int n) {
    int l, r;
    split(t, at(n).start, l, r);
    return merge(merge(l, n), r);
  }
  int erase(int t, double key) {
    if (t == kNil) return kNil;
    if (at(t).start == key) {
      free_.push_back(t);
      return merge(at(t).left, at(t).right);
    }
    if (key < at(t).start)
      at(t).left = erase(at(t).left, key);
    else
      at(t).right = erase(at(t).right, key);
    pull(t);
    return t;
  }
  // Gap with the largest start <= x.
  int floor_gap(double x) const {
    int t = root_, best = kNil;
    while (t != kNil) {
      if (at(t).start <= x) {
        best = t;
        t = at(t).right;
      } else {
        t = at(t).left;
      }
    }
    return best;
  }
  // Leftmost gap with start > ready and length >= d.
  int first_fit(int t, double ready, double d) const {
    while (t != kNil && at(t).maxlen + kEps >= d) {
      if (at(t).start > ready) {
        int r = first_fit(at(t).left, ready, d);
        if (r != kNil) return r;
        if (at(t).end - at(t).start + kEps >= d) return t;
        return first_fit_all(at(t).right, d);
      }
      t = at(t).right;
    }
    return kNil;
  }
  // Leftmost gap in the subtree with length >= d.
  int first_fit_all(int t, double d) const {
    while (t != kNil && at(t).maxlen + kEps >= d) {
      if (ml(at(t).left) + kEps >= d) {
        t = at(t).left;
      } else if (at(t).end - at(t).start + kEps >= d) {
        return t;
      } else {
        t = at(t).right;
      }
    }
    return kNil;
  }
};

}  // namespace stepgraph::graphs::detail

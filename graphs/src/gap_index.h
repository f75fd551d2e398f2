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
    int g = floor_gap(ready);
    if (g != kNil && ready + d <= end_[g] + kEps) return ready;
    int f = first_fit(root_, ready, d);
    return start_[f];  // the open-ended last gap always fits
  }

  /// Marks [s, s + d) busy; it must lie inside one gap.
  void occupy(double s, double d) {
    if (d <= 0) return;
    int g = floor_gap(s + kEps);
    const double gs = start_[g], ge = end_[g];
    root_ = erase(root_, gs);
    if (s - gs > kEps) root_ = insert(root_, make(gs, s));
    if (ge - (s + d) > kEps) root_ = insert(root_, make(s + d, ge));
  }

  [[nodiscard]] std::size_t gap_count() const { return size_(root_); }

 private:
  static constexpr int kNil = -1;
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  static constexpr double kEps = 1e-9;

  std::vector<double> start_, end_, maxlen_;
  std::vector<std::uint32_t> prio_;
  std::vector<int> left_, right_, free_;
  int root_ = kNil;
  std::uint64_t rng_ = 0x9E3779B97F4A7C15ull;

  int make(double s, double e) {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    int id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
      start_[id] = s;
      end_[id] = e;
      maxlen_[id] = e - s;
      prio_[id] = static_cast<std::uint32_t>(rng_);
      left_[id] = right_[id] = kNil;
    } else {
      id = static_cast<int>(start_.size());
      start_.push_back(s);
      end_.push_back(e);
      maxlen_.push_back(e - s);
      prio_.push_back(static_cast<std::uint32_t>(rng_));
      left_.push_back(kNil);
      right_.push_back(kNil);
    }
    return id;
  }
  double ml(int t) const { return t == kNil ? -1.0 : maxlen_[t]; }
  std::size_t size_(int t) const { return t == kNil ? 0 : 1 + size_(left_[t]) + size_(right_[t]); }
  void pull(int t) {
    double m = end_[t] - start_[t];
    if (ml(left_[t]) > m) m = ml(left_[t]);
    if (ml(right_[t]) > m) m = ml(right_[t]);
    maxlen_[t] = m;
  }
  // Split into (< key, >= key).
  void split(int t, double key, int& l, int& r) {
    if (t == kNil) {
      l = r = kNil;
      return;
    }
    if (start_[t] < key) {
      split(right_[t], key, right_[t], r);
      l = t;
    } else {
      split(left_[t], key, l, left_[t]);
      r = t;
    }
    pull(t);
  }
  int merge(int a, int b) {
    if (a == kNil) return b;
    if (b == kNil) return a;
    if (prio_[a] > prio_[b]) {
      right_[a] = merge(right_[a], b);
      pull(a);
      return a;
    }
    left_[b] = merge(a, left_[b]);
    pull(b);
    return b;
  }
  int insert(int t, int n) {
    int l, r;
    split(t, start_[n], l, r);
    return merge(merge(l, n), r);
  }
  int erase(int t, double key) {
    if (t == kNil) return kNil;
    if (start_[t] == key) {
      free_.push_back(t);
      return merge(left_[t], right_[t]);
    }
    if (key < start_[t])
      left_[t] = erase(left_[t], key);
    else
      right_[t] = erase(right_[t], key);
    pull(t);
    return t;
  }
  // Gap with the largest start <= x.
  int floor_gap(double x) const {
    int t = root_, best = kNil;
    while (t != kNil) {
      if (start_[t] <= x) {
        best = t;
        t = right_[t];
      } else {
        t = left_[t];
      }
    }
    return best;
  }
  // Leftmost gap with start > ready and length >= d.
  int first_fit(int t, double ready, double d) const {
    while (t != kNil && maxlen_[t] + kEps >= d) {
      if (start_[t] > ready) {
        int r = first_fit(left_[t], ready, d);
        if (r != kNil) return r;
        if (end_[t] - start_[t] + kEps >= d) return t;
        return first_fit_all(right_[t], d);
      }
      t = right_[t];
    }
    return kNil;
  }
  // Leftmost gap in the subtree with length >= d.
  int first_fit_all(int t, double d) const {
    while (t != kNil && maxlen_[t] + kEps >= d) {
      if (ml(left_[t]) + kEps >= d) {
        t = left_[t];
      } else if (end_[t] - start_[t] + kEps >= d) {
        return t;
      } else {
        t = right_[t];
      }
    }
    return kNil;
  }
};

}  // namespace stepgraph::graphs::detail

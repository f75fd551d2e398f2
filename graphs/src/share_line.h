// Private: how many transfers a link carries over time, for HEFT's
// bandwidth-sharing view of links (Note [Shared bandwidth in HEFT] in
// placement.cpp).
#pragma once

#include <iterator>
#include <limits>
#include <map>

namespace stepgraph::graphs::detail {

// A step function: count(t) = the number of committed transfers flowing on
// the link at time t. Stored as breakpoints, each holding the count from
// its time up to the next breakpoint; zero before the first.
class ShareLine {
 public:
  // A forward walk over the steps from time t: count() holds on
  // [t, next()); advance() moves to next().
  class Cursor {
   public:
    Cursor(const ShareLine& line, double t) : end_(line.steps_.end()), it_(line.steps_.upper_bound(t)) {
      if (it_ != line.steps_.begin()) count_ = std::prev(it_)->second;
    }
    [[nodiscard]] int count() const { return count_; }
    [[nodiscard]] double next() const { return it_ == end_ ? std::numeric_limits<double>::infinity() : it_->first; }
    void advance() {
      count_ = it_->second;
      ++it_;
    }

   private:
    std::map<double, int>::const_iterator end_, it_;
    int count_ = 0;
  };
  // One more transfer over [a, b).
  void add(double a, double b) {
    if (!(b > a)) return;
    split_at(a);
    split_at(b);
    for (auto it = steps_.find(a); it != steps_.end() && it->first < b; ++it) ++it->second;
  }
  // Breakpoints before t never matter to a query from >= t: keep only the
  // step that covers t.
  void forget_before(double t) {
    auto it = steps_.upper_bound(t);
    if (it == steps_.begin()) return;
    --it;  // the step covering t
    steps_.erase(steps_.begin(), it);
  }

 private:
  void split_at(double t) {
    auto it = steps_.lower_bound(t);
    if (it != steps_.end() && it->first == t) return;
    const int before = it == steps_.begin() ? 0 : std::prev(it)->second;
    steps_.emplace_hint(it, t, before);
  }
  std::map<double, int> steps_;
};

}  // namespace stepgraph::graphs::detail

#include <stepgraph/core/error.h>

#include <cstdio>
#include <cstdlib>

namespace stepgraph::detail {

void internal_assert_failed(const char* expr, const char* file, int line, const std::string& msg) {
  // An internal assert is a stepgraph bug: say so, and where.
  throw Error(fmt::format("internal error (please report): assertion `{}` failed at {}:{}{}{}", expr, file, line,
                          msg.empty() ? "" : ": ", msg));
}

}  // namespace stepgraph::detail

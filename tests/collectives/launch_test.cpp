// detect_launch(): the launcher's environment read without MPI (Note
// [Launch detection without MPI]). Each test sets exactly the variables it
// needs and restores the environment after.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include <stepgraph/collectives/launch.h>
#include <stepgraph/core/error.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::collectives;
using Vars = std::map<std::string, std::string>;

const char* const kVars[] = {"OMPI_COMM_WORLD_RANK",
                             "OMPI_COMM_WORLD_SIZE",
                             "OMPI_COMM_WORLD_LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE",
                             "SLURM_PROCID",
                             "SLURM_NTASKS",
                             "SLURM_LOCALID",
                             "SLURM_NTASKS_PER_NODE",
                             "SLURM_TASKS_PER_NODE",
                             "PMI_RANK",
                             "PMI_SIZE"};

/// Clears every launcher variable for the test's life, sets `set`, and
/// puts the environment back as it was (the binary may itself run under a
/// launcher).
class LaunchEnv {
 public:
  explicit LaunchEnv(const Vars& set) {
    for (const char* v : kVars) {
      const char* old = std::getenv(v);
      saved_[v] = old ? std::optional<std::string>(old) : std::nullopt;
      ::unsetenv(v);
    }
    for (const auto& [k, v] : set) ::setenv(k.c_str(), v.c_str(), 1);
  }
  LaunchEnv(const LaunchEnv&) = delete;
  LaunchEnv& operator=(const LaunchEnv&) = delete;
  ~LaunchEnv() {
    for (const auto& [k, v] : saved_) {
      if (v)
        ::setenv(k.c_str(), v->c_str(), 1);
      else
        ::unsetenv(k.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST(DetectLaunch, NoLauncherIsRankZeroOfOne) {
  LaunchEnv env(Vars{});
  const LaunchInfo l = detect_launch();
  EXPECT_EQ(l.rank, 0);
  EXPECT_EQ(l.size, 1);
  EXPECT_EQ(l.local_rank, 0);
  EXPECT_EQ(l.local_size, 1);
  EXPECT_EQ(l.source, "none");
}

TEST(DetectLaunch, ReadsOpenMpi) {
  LaunchEnv env(Vars{{"OMPI_COMM_WORLD_RANK", "5"},
                     {"OMPI_COMM_WORLD_SIZE", "8"},
                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                     {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                     {"SLURM_PROCID", "0"},  // Open MPI's own variables win under srun + mpirun
                     {"SLURM_NTASKS", "1"}});
  const LaunchInfo l = detect_launch();
  EXPECT_EQ(l.source, "openmpi");
  EXPECT_EQ(l.rank, 5);
  EXPECT_EQ(l.size, 8);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_size, 4);
}

TEST(DetectLaunch, ReadsSlurm) {
  LaunchEnv env(
      Vars{{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "1"}, {"SLURM_TASKS_PER_NODE", "2(x2)"}});
  const LaunchInfo l = detect_launch();
  EXPECT_EQ(l.source, "slurm");
  EXPECT_EQ(l.rank, 3);
  EXPECT_EQ(l.size, 4);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_size, 2);
}

TEST(DetectLaunch, ReadsPmi) {
  LaunchEnv env(Vars{{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}});
  const LaunchInfo l = detect_launch();
  EXPECT_EQ(l.source, "pmi");
  EXPECT_EQ(l.rank, 2);
  EXPECT_EQ(l.size, 3);
}

TEST(DetectLaunch, AMalformedValueIsInvalidArgumentNamingTheVariable) {
  for (const char* bad : {"", "x", "-1", "2a", "99999999999"}) {
    LaunchEnv env(Vars{{"OMPI_COMM_WORLD_RANK", bad}, {"OMPI_COMM_WORLD_SIZE", "4"}});
    sgtest::expect_throw_with<InvalidArgument>([] { (void)detect_launch(); }, {"OMPI_COMM_WORLD_RANK"});
  }
  {
    LaunchEnv env(Vars{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "four"}});
    sgtest::expect_throw_with<InvalidArgument>([] { (void)detect_launch(); }, {"SLURM_NTASKS='four'"});
  }
  {
    LaunchEnv env(Vars{{"PMI_RANK", "3"}, {"PMI_SIZE", "3"}});
    sgtest::expect_throw_with<InvalidArgument>([] { (void)detect_launch(); }, {"PMI_RANK=3", "PMI_SIZE=3"});
  }
  {
    LaunchEnv env(Vars{{"PMI_RANK", "0"}});
    sgtest::expect_throw_with<InvalidArgument>([] { (void)detect_launch(); }, {"PMI_SIZE", "not"});
  }
}

}  // namespace

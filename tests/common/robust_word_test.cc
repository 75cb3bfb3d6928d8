// RobustWord (common/robust_word.h): held words carry the holder's thread id and are refused to
// others; a holder killed with SIGKILL leaves the kernel's dead mark, also when it lives in a PID
// namespace of its own (a container), where its id means nothing to the observer.
#include "common/robust_word.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

namespace foresight {
namespace {

uint32_t ThisThreadId() { return static_cast<uint32_t>(syscall(SYS_gettid)); }

// A page shared with forked children, as a claim table is shared with the node.
class SharedPage {
 public:
  SharedPage() {
    void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    words_ = p == MAP_FAILED ? nullptr : static_cast<uint32_t*>(p);
  }
  ~SharedPage() {
    if (words_ != nullptr) munmap(words_, 4096);
  }
  uint32_t* words() const { return words_; }

 private:
  uint32_t* words_;
};

TEST(RobustWordTest, AHeldWordCarriesTheHoldersIdAndIsFreeAfterRelease) {
  uint32_t word = 0;
  {
    RobustWordHold hold(&word);
    ASSERT_TRUE(hold.held());
    EXPECT_EQ(LoadRobustWord(&word), ThisThreadId());
    EXPECT_FALSE(RobustWordOwnerDied(LoadRobustWord(&word)));
    EXPECT_FALSE(ClearDeadRobustWord(&word)) << "a live holder's word was reset";
  }
  EXPECT_EQ(word, 0u);
  RobustWordHold again(&word);
  EXPECT_TRUE(again.held());
  again.Release();
  EXPECT_EQ(word, 0u);
}

TEST(RobustWordTest, AnotherThreadIsRefusedWhileTheWordIsHeld) {
  uint32_t word = 0;
  RobustWordHold hold(&word);
  ASSERT_TRUE(hold.held());
  bool other_held = true;
  uint32_t other_found = 0;
  std::thread other([&] {
    RobustWordHold attempt(&word);
    other_held = attempt.held();
    other_found = attempt.found();
  });
  other.join();
  EXPECT_FALSE(other_held);
  EXPECT_EQ(other_found, ThisThreadId());
}

TEST(RobustWordTest, AThreadHoldsOneWordAtATime) {
  uint32_t words[2] = {0, 0};
  RobustWordHold first(&words[0]);
  ASSERT_TRUE(first.held());
  RobustWordHold second(&words[1]);
  EXPECT_FALSE(second.held());
  EXPECT_EQ(second.found(), 0u);
  EXPECT_EQ(words[1], 0u);
  first.Release();
  RobustWordHold third(&words[1]);
  EXPECT_TRUE(third.held());
}

TEST(RobustWordTest, AWordThatMarksADeadHolderIsNotTaken) {
  uint32_t word = kRobustWordOwnerDied;
  RobustWordHold hold(&word);
  EXPECT_FALSE(hold.held());
  EXPECT_EQ(hold.found(), kRobustWordOwnerDied);
  EXPECT_TRUE(ClearDeadRobustWord(&word));
  EXPECT_EQ(word, 0u);
}

// Forks a holder (in a new PID namespace when `own_pid_namespace`), which takes words[0] and
// reports; then kills it with SIGKILL. Returns the holder's id as it stored it, and its pid as
// this process sees it.
struct Holder {
  uint32_t stored_id = 0;
  pid_t pid = -1;
};
Holder HoldInAChildAndKillIt(uint32_t* words, bool own_pid_namespace, std::string* error) {
  int ready[2];
  if (pipe(ready) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return {};
  }
  const pid_t outer = fork();
  if (outer == 0) {
    // The go-between: a new PID namespace applies to the children made after unshare().
    if (own_pid_namespace && unshare(CLONE_NEWPID) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0) _exit(2);
    const pid_t holder = fork();
    if (holder == 0) {
      RobustWordHold hold(&words[0]);
      words[1] = hold.held() ? 1 : 2;
      const char c = 1;
      if (write(ready[1], &c, 1) != 1) _exit(3);
      for (;;) pause();
    }
    std::atomic_ref<uint32_t>(words[2]).store(static_cast<uint32_t>(holder), std::memory_order_release);
    int status = 0;
    waitpid(holder, &status, 0);
    _exit(0);
  }
  close(ready[1]);
  char c = 0;
  const bool reported = read(ready[0], &c, 1) == 1;
  close(ready[0]);
  Holder h;
  // The go-between stores the holder's pid once fork() returns to it.
  for (int i = 0; reported && i < 5000 && LoadRobustWord(&words[2]) == 0; ++i) usleep(1000);
  h.pid = static_cast<pid_t>(LoadRobustWord(&words[2]));
  h.stored_id = LoadRobustWord(&words[0]);
  if (!reported || words[1] != 1) {
    *error = reported ? "the child could not hold the word"
                      : "the child never reported (no PID namespace: unshare refused, exit 2?)";
  }
  if (h.pid > 0) kill(h.pid, SIGKILL);
  int status = 0;
  waitpid(outer, &status, 0);
  if (!reported && WIFEXITED(status) && WEXITSTATUS(status) == 2) *error = "unshare(CLONE_NEWPID) refused";
  return h;
}

TEST(RobustWordTest, AHolderKilledWithSigkillLeavesTheDeadMark) {
  SharedPage page;
  ASSERT_NE(page.words(), nullptr);
  std::string error;
  Holder h = HoldInAChildAndKillIt(page.words(), /*own_pid_namespace=*/false, &error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(h.stored_id, static_cast<uint32_t>(h.pid)) << "the holder's id (its only thread's)";
  EXPECT_EQ(LoadRobustWord(&page.words()[0]), kRobustWordOwnerDied);
  EXPECT_TRUE(ClearDeadRobustWord(&page.words()[0]));
  EXPECT_EQ(page.words()[0], 0u);
}

TEST(RobustWordTest, AHolderInAnotherPidNamespaceIsSeenDeadToo) {
  SharedPage page;
  ASSERT_NE(page.words(), nullptr);
  std::string error;
  Holder h = HoldInAChildAndKillIt(page.words(), /*own_pid_namespace=*/true, &error);
  if (error == "unshare(CLONE_NEWPID) refused") GTEST_SKIP() << "cannot make a PID namespace here: " << error;
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(h.stored_id, 1u) << "the holder is its namespace's first process: its id there is 1";
  EXPECT_NE(h.pid, 1);
  EXPECT_EQ(LoadRobustWord(&page.words()[0]), kRobustWordOwnerDied);
}

}  // namespace
}  // namespace foresight

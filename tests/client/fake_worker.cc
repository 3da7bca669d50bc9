// SPDX-License-Identifier: Apache-2.0
// A stand-in for ubcp-worker in tests/client/worker_process_test.cc: runs its arguments as a
// list of commands, in order, then exits 0.
//   print TEXT        one line on stdout          lines N       "line 0" .. "line N-1"
//   long BYTES        one line of BYTES 'x'       partial TEXT  TEXT without a newline
//   stderr TEXT       one line on stderr          env NAME      "NAME=value" or "NAME unset"
//   sleep MS          sleep                       alloc MIB     allocate and touch MIB MiB
//   child-alloc MIB   fork a child that allocates MIB MiB, prints "child <pid>" and sleeps;
//                     go on once it has printed
//   ignore-term       ignore SIGTERM              exit-on-term CODE  exit(CODE) on SIGTERM
//   report            print nice=, ioclass=, own_group=, fds=, sigterm=, blocked=
//   exit CODE         exit now                    kill-self SIG  raise SIG
//   answer EXTRA      serve requests: for each line R read on stdin, print "heard R", then
//                     EXTRA more lines "more R <i>", then "done R" (all in one write); "exit"
//                     as a request exits 7; go on at the end of the input
// Output goes through write(2), unbuffered, so nothing is duplicated by fork or lost by _exit.

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void WriteAll(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) std::_Exit(90);
    done += static_cast<std::size_t>(n);
  }
}

void Line(const std::string& text) { WriteAll(STDOUT_FILENO, text + "\n"); }

void SleepMs(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000};
  while (::nanosleep(&ts, &ts) != 0) {
  }
}

// Allocates and touches every page, so the memory is resident; never freed. The blocks are
// kept in a global the compiler cannot see through, so the allocation is not optimised away.
std::vector<volatile char*> kept_blocks;

void Allocate(long mib) {
  const std::size_t bytes = static_cast<std::size_t>(mib) << 20;
  auto* block = static_cast<volatile char*>(std::malloc(bytes));
  if (block == nullptr) std::_Exit(91);
  for (std::size_t i = 0; i < bytes; i += 4096) block[i] = 1;
  kept_blocks.push_back(block);
}

std::string OpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return "?";
  std::vector<int> fds;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd != ::dirfd(dir)) fds.push_back(fd);
  }
  ::closedir(dir);
  std::sort(fds.begin(), fds.end());
  std::string text;
  for (int fd : fds) text += (text.empty() ? "" : ",") + std::to_string(fd);
  return text;
}

void Report() {
  errno = 0;
  Line("nice=" + std::to_string(::getpriority(PRIO_PROCESS, 0)));
  const long ioprio = ::syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
  Line("ioclass=" + std::to_string(ioprio < 0 ? -1 : ioprio >> 13));
  Line(std::string("own_group=") + (::getpgrp() == ::getpid() ? "1" : "0"));
  Line("fds=" + OpenFds());
  struct sigaction current {};
  ::sigaction(SIGTERM, nullptr, &current);
  Line(std::string("sigterm=") + (current.sa_handler == SIG_DFL ? "default" : "changed"));
  sigset_t blocked;
  ::sigprocmask(SIG_BLOCK, nullptr, &blocked);
  Line(std::string("blocked=") + (::sigismember(&blocked, SIGTERM) ? "1" : "0"));
}

int exit_on_term_code = 0;
void ExitOnTerm(int) { ::_exit(exit_on_term_code); }

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string command = argv[i];
    const bool has_arg = i + 1 < argc;
    const std::string arg = has_arg ? argv[i + 1] : "";
    if (command == "report") {
      Report();
      continue;
    }
    if (command == "ignore-term") {
      ::signal(SIGTERM, SIG_IGN);
      continue;
    }
    if (!has_arg) {
      std::fprintf(stderr, "fake_worker: %s needs an argument\n", command.c_str());
      return 64;
    }
    ++i;
    if (command == "print") {
      Line(arg);
    } else if (command == "lines") {
      for (long n = 0; n < std::atol(arg.c_str()); ++n) Line("line " + std::to_string(n));
    } else if (command == "long") {
      Line(std::string(static_cast<std::size_t>(std::atol(arg.c_str())), 'x'));
    } else if (command == "partial") {
      WriteAll(STDOUT_FILENO, arg);
    } else if (command == "stderr") {
      WriteAll(STDERR_FILENO, arg + "\n");
    } else if (command == "env") {
      const char* value = std::getenv(arg.c_str());
      Line(value ? arg + "=" + value : arg + " unset");
    } else if (command == "answer") {
      std::string pending;
      char chunk[256];
      for (;;) {
        const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        pending.append(chunk, static_cast<std::size_t>(n));
        for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
          const std::string request = pending.substr(0, nl);
          pending.erase(0, nl + 1);
          if (request == "exit") std::_Exit(7);
          std::string out = "heard " + request + "\n";
          for (long k = 0; k < std::atol(arg.c_str()); ++k) {
            out += "more " + request + " " + std::to_string(k) + "\n";
          }
          WriteAll(STDOUT_FILENO, out + "done " + request + "\n");
        }
      }
    } else if (command == "sleep") {
      SleepMs(std::atol(arg.c_str()));
    } else if (command == "alloc") {
      Allocate(std::atol(arg.c_str()));
      Line("allocated " + arg);
    } else if (command == "child-alloc") {
      // The parent goes on once the child has allocated and reported, so that what follows
      // (an exit, a sleep) always finds the child there.
      int ready[2];
      if (::pipe(ready) != 0) return 92;
      const pid_t child = ::fork();
      if (child < 0) return 92;
      if (child == 0) {
        Allocate(std::atol(arg.c_str()));
        Line("child " + std::to_string(::getpid()));
        WriteAll(ready[1], "r");
        for (;;) ::pause();
      }
      char byte;
      if (::read(ready[0], &byte, 1) != 1) return 93;
      ::close(ready[0]);
      ::close(ready[1]);
    } else if (command == "exit-on-term") {
      exit_on_term_code = std::atoi(arg.c_str());
      struct sigaction action {};
      action.sa_handler = ExitOnTerm;
      ::sigaction(SIGTERM, &action, nullptr);
    } else if (command == "exit") {
      return std::atoi(arg.c_str());
    } else if (command == "kill-self") {
      ::raise(std::atoi(arg.c_str()));
    } else {
      std::fprintf(stderr, "fake_worker: unknown command %s\n", command.c_str());
      return 64;
    }
  }
  return 0;
}

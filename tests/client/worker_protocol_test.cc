// SPDX-License-Identifier: Apache-2.0
// The request lines a daemon sends to `ubcp-worker serve` and the `end` line that closes each
// unit's answer (worker_protocol.h): a request survives the round trip, and anything else (a
// path outside the worker's root, a missing or extra field, a value out of range, a line too
// long) is refused with the reason.

#include "ubcp/client/worker_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace ubcp::client {
namespace {

ExecutionRequest Request() {
  ExecutionRequest r;
  r.unit_dir = "/var/lib/ubcp/units/17";
  r.manifest_hash = "b2:0123abcd";
  r.model_blob = "/var/lib/ubcp/blobs/b2:aa";
  r.data_blob = "/var/lib/ubcp/blobs/b2:bb";
  r.threads = 3;  // belongs to the worker's command line, not to the request
  r.checkpoint_every = 250;
  r.checkpoint_seconds = 12.5;
  r.adversary = {AdversaryMode::kSignFlip, 4.0};
  return r;
}

common::Errc RefusalOf(const std::string& line, const std::string& root = "/var/lib/ubcp") {
  auto parsed = ParseWorkerRequest(line, root);
  EXPECT_FALSE(parsed) << line;
  return parsed ? common::Errc::kInternal : parsed.error().code;
}

TEST(WorkerProtocolTest, ARequestSurvivesTheRoundTrip) {
  const std::string line = FormatWorkerRequest(Request());
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto parsed = ParseWorkerRequest(line, "/var/lib/ubcp/");
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(parsed->unit_dir, "/var/lib/ubcp/units/17");
  EXPECT_EQ(parsed->manifest_hash, "b2:0123abcd");
  EXPECT_EQ(parsed->model_blob, "/var/lib/ubcp/blobs/b2:aa");
  EXPECT_EQ(parsed->data_blob, "/var/lib/ubcp/blobs/b2:bb");
  EXPECT_EQ(parsed->checkpoint_every, 250);
  EXPECT_EQ(parsed->checkpoint_seconds, 12.5);
  EXPECT_EQ(parsed->adversary.mode, AdversaryMode::kSignFlip);
  EXPECT_EQ(parsed->adversary.scale, 4.0);
  // Any root above the paths will do; "/" admits every absolute path.
  EXPECT_TRUE(ParseWorkerRequest(line, "/"));
  EXPECT_TRUE(ParseWorkerRequest(line, "/var"));
}

TEST(WorkerProtocolTest, PathsOutsideTheRootAreForbidden) {
  ExecutionRequest r = Request();
  EXPECT_EQ(RefusalOf(FormatWorkerRequest(r), "/var/lib/ubcp-other"), common::Errc::kForbidden);
  r.model_blob = "/etc/shadow";
  EXPECT_EQ(RefusalOf(FormatWorkerRequest(r)), common::Errc::kForbidden);
  r = Request();
  r.data_blob = "/var/lib/ubcp/blobs/../../../../etc/passwd";
  EXPECT_EQ(RefusalOf(FormatWorkerRequest(r)), common::Errc::kForbidden);
  r = Request();
  r.unit_dir = "units/17";  // relative
  EXPECT_EQ(RefusalOf(FormatWorkerRequest(r)), common::Errc::kForbidden);
}

TEST(WorkerProtocolTest, MalformedRequestsAreRefused) {
  const std::string good = FormatWorkerRequest(Request());
  const std::string json = good.substr(4);
  EXPECT_EQ(RefusalOf("stop " + json), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf("run [1,2]"), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf("run {\"unit_dir\":"), common::Errc::kMalformed);
  const auto with = [&](const std::string& field, const std::string& value) {
    const std::size_t at = json.find("\"" + field + "\":");
    const std::size_t from = at + field.size() + 3;
    const std::size_t to = json.find_first_of(",}", from);
    return "run " + json.substr(0, from) + value + json.substr(to);
  };
  EXPECT_TRUE(ParseWorkerRequest(with("checkpoint_every", "0"), "/var/lib/ubcp"));
  EXPECT_EQ(RefusalOf(with("checkpoint_every", "-1")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("checkpoint_every", "1.5")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("checkpoint_every", "\"9\"")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("checkpoint_seconds", "-2")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("checkpoint_seconds", "1e300")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("adversary", "\"mostly_honest\"")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("adversary_scale", "0")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("manifest_hash", "\"\"")), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf(with("unit_dir", "7")), common::Errc::kMalformed);
  // Exactly the eight fields: one more, or one fewer, is refused.
  EXPECT_EQ(RefusalOf("run {\"extra\":1," + json.substr(1)), common::Errc::kMalformed);
  const std::size_t cut = json.find(",\"manifest_hash\"");
  const std::size_t next = json.find(",\"model_blob\"");
  EXPECT_EQ(RefusalOf("run " + json.substr(0, cut) + json.substr(next)), common::Errc::kMalformed);
  EXPECT_EQ(RefusalOf("run " + std::string(kMaxWorkerLine, ' ')), common::Errc::kTooLarge);
}

TEST(WorkerProtocolTest, EndLinesCarryOnlyTheTwoFinalCodes) {
  for (const int code : {kWorkerDone, kWorkerFailed}) {
    const std::string line = FormatWorkerEvent({WorkerEvent::Kind::kEnd, code, 0, {}});
    auto event = ParseWorkerLine(line);
    ASSERT_TRUE(event) << line;
    EXPECT_EQ(event->kind, WorkerEvent::Kind::kEnd);
    EXPECT_EQ(event->first, code);
  }
  EXPECT_FALSE(ParseWorkerLine("end 4"));  // a stop ends the worker, never a unit's answer
  EXPECT_FALSE(ParseWorkerLine("end 1"));
  EXPECT_FALSE(ParseWorkerLine("end"));
  EXPECT_FALSE(ParseWorkerLine("end 0 extra"));
}

TEST(WorkerProtocolTest, TheServeCommandLineNamesRootThreadsAndIdleTime) {
  EXPECT_EQ(WorkerServeArgv("/usr/bin/ubcp-worker", "/var/lib/ubcp", 4, 600),
            (std::vector<std::string>{"/usr/bin/ubcp-worker", "serve", "--root", "/var/lib/ubcp",
                                      "--threads", "4", "--idle-exit-seconds", "600"}));
}

}  // namespace
}  // namespace ubcp::client

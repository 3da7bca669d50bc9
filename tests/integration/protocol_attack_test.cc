// SPDX-License-Identifier: Apache-2.0
// Issue #4's protocol attacks against the real coordinator: a donor that replays an earlier
// result, answers with an older manifest's version, or forges its signature, working alongside
// honest donors, gets nothing of it stored or paid, and the job completes on honest work. A
// harness replays and re-signs another host's accepted result under the attacker's token. A
// stale (lazy) donor is a content attack: the protocol accepts its results.
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <string>

#include "coordinator/raw_db.h"
#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

// Turns of the attack loop before a test gives up on the job finishing.
constexpr int kMaxTurns = 80;

void Add(client::RunSummary& total, const client::RunSummary& run) {
  total.units_done += run.units_done;
  total.units_refused += run.units_refused;
  total.results_submitted += run.results_submitted;
  total.results_accepted += run.results_accepted;
  total.results_duplicate += run.results_duplicate;
  total.results_rejected += run.results_rejected;
  total.units_tampered += run.units_tampered;
  total.stale_updates += run.stale_updates;
}

class ProtocolAttackTest : public LoopTest {
 protected:
  // One unit per run, so that the test decides who works when.
  static client::RunnerOptions OneUnit(client::Adversary adversary = {}) {
    client::RunnerOptions options;
    options.executor = client::MakeInProcessExecutor();
    options.max_units = 1;
    options.max_idle_polls = 1;
    options.idle_poll_s = 0.05;
    options.max_backoff_s = 0.5;
    options.adversary = adversary;
    return options;
  }
  std::unique_ptr<client::Runner> NewRunner(Donor& donor, client::RunnerOptions options) {
    return std::make_unique<client::Runner>(*donor.api, *donor.state, *donor.key,
                                            signing_key_->public_key(), donor.registration.host_id,
                                            std::move(options));
  }

  // A count (or sum) over the results table, read from the store's file.
  std::int64_t CountResults(const std::string& select = "COUNT(*)", const std::string& where = "") {
    coordinator::RawDb db(dir_ / "coordinator.db");
    const std::string sql = "SELECT " + select + " FROM results" + where;
    const std::string value = db.Query(sql.c_str());
    return value.empty() ? 0 : std::stoll(value);
  }
  std::int64_t ResultsOf(std::int64_t host_id) {
    return CountResults("COUNT(*)", " WHERE host_id = " + std::to_string(host_id));
  }
  std::int64_t CreditsOf(std::int64_t host_id) {
    return CountResults("COALESCE(SUM(credits), 0)", " WHERE host_id = " + std::to_string(host_id));
  }
  std::int64_t DonorBalance(std::int64_t host_id) {
    auto balance = store_->Balance(coordinator::DonorAccount(host_id));
    EXPECT_TRUE(balance) << balance.error().ToString();
    return balance ? *balance : -1;
  }

  // Runs a 3-round job with one attacker and two honest donors taking turns: the attacker
  // answers one unit, the clock moves past its lease (a refused unit is leased again), then an
  // honest donor answers one unit. The attacker keeps one runner, so it remembers earlier units.
  // Returns the attacker's summary over all its runs; `job_id` and `attacker_id` are set.
  client::RunSummary RunAlongsideHonestDonors(client::Adversary adversary,
                                              std::vector<std::string> attacker_kinds,
                                              std::int64_t& job_id, std::int64_t& attacker_id) {
    auto spec = common::ParseJobSpec(DigitsJob(3));
    EXPECT_TRUE(spec);
    job_id = SubmitJob(common::SerializeJobSpec(*spec));
    auto attacker = NewDonor("attacker");
    attacker_id = attacker->registration.host_id;
    std::vector<std::unique_ptr<Donor>> honest;
    for (int i = 0; i < 2; ++i) honest.push_back(NewDonor("honest-" + std::to_string(i)));

    client::RunnerOptions cheat_options = OneUnit(adversary);
    cheat_options.kinds = std::move(attacker_kinds);
    auto cheat = NewRunner(*attacker, cheat_options);
    std::vector<std::unique_ptr<client::Runner>> fair;
    for (auto& d : honest) fair.push_back(NewRunner(*d, OneUnit()));

    client::RunSummary total;
    std::atomic<bool> stop{false};
    for (int turn = 0; turn < kMaxTurns && Status(job_id).state != "done"; ++turn) {
      Add(total, cheat->Run(stop));
      now_ += spec->deadline_s + 1;
      const client::RunSummary fair_run = fair[turn % fair.size()]->Run(stop);
      EXPECT_EQ(fair_run.results_rejected, 0) << "an honest donor was refused, turn " << turn;
    }
    EXPECT_EQ(Status(job_id).state, "done");
    return total;
  }

  static void Print(const char* mode, const client::RunSummary& s) {
    std::cout << mode << ": submitted " << s.results_submitted << ", accepted "
              << s.results_accepted << ", duplicate " << s.results_duplicate << ", rejected "
              << s.results_rejected << ", tampered units " << s.units_tampered << ", stale updates "
              << s.stale_updates << "\n";
  }
};

TEST_F(ProtocolAttackTest, ForgedResultsAreAllRefused) {
  std::int64_t job_id = 0, attacker = 0;
  const client::RunSummary s =
      RunAlongsideHonestDonors({client::AdversaryMode::kForged, 1.0}, {}, job_id, attacker);
  Print("forged", s);
  EXPECT_GE(s.units_tampered, 3);
  EXPECT_EQ(s.results_submitted, s.units_tampered);  // every result was forged
  EXPECT_EQ(s.results_rejected, s.results_submitted);
  EXPECT_EQ(s.results_accepted + s.results_duplicate, 0);
  EXPECT_EQ(ResultsOf(attacker), 0);
  EXPECT_EQ(DonorBalance(attacker), 0);
}

TEST_F(ProtocolAttackTest, WrongVersionResultsAreAllRefused) {
  std::int64_t job_id = 0, attacker = 0;
  const client::RunSummary s =
      RunAlongsideHonestDonors({client::AdversaryMode::kWrongVersion, 1.0}, {}, job_id, attacker);
  Print("wrong_version", s);
  // Its first unit is answered honestly (there is no earlier version to name yet) and counts;
  // every later answer names the previous manifest and is refused.
  EXPECT_GE(s.units_tampered, 3);
  EXPECT_EQ(s.results_accepted, 1);
  EXPECT_EQ(s.results_submitted, s.units_tampered + 1);
  EXPECT_EQ(s.results_rejected, s.units_tampered);
  EXPECT_EQ(s.results_duplicate, 0);
  EXPECT_EQ(ResultsOf(attacker), s.results_accepted);
  EXPECT_GT(CreditsOf(attacker), 0);
  EXPECT_EQ(DonorBalance(attacker), CreditsOf(attacker));  // paid for its honest unit only
}

TEST_F(ProtocolAttackTest, ReplayedResultsAreNeverCountedAgain) {
  std::int64_t job_id = 0, attacker = 0;
  const client::RunSummary s =
      RunAlongsideHonestDonors({client::AdversaryMode::kReplay, 1.0}, {}, job_id, attacker);
  Print("replay", s);
  // Its first unit is answered honestly and counts; every later unit is answered with that same
  // envelope, which binds the first unit: never recorded or paid again.
  EXPECT_GE(s.units_tampered, 3);
  EXPECT_EQ(s.results_accepted, 1);
  EXPECT_EQ(s.results_submitted, s.units_tampered + 1);
  EXPECT_EQ(s.results_duplicate + s.results_rejected, s.units_tampered);
  EXPECT_EQ(ResultsOf(attacker), s.results_accepted);
  EXPECT_GT(CreditsOf(attacker), 0);
  EXPECT_EQ(DonorBalance(attacker), CreditsOf(attacker));  // paid for its honest unit only
}

TEST_F(ProtocolAttackTest, StaleUpdatesAreAContentAttackThatTheProtocolAccepts) {
  std::int64_t job_id = 0, attacker = 0;
  const client::RunSummary s = RunAlongsideHonestDonors(
      {client::AdversaryMode::kStale, 1.0}, {std::string(common::kUnitFinetune)}, job_id, attacker);
  Print("stale", s);
  EXPECT_GE(s.stale_updates, 1);
  EXPECT_EQ(s.units_tampered, 0);
  EXPECT_EQ(s.results_rejected, 0);
  EXPECT_EQ(s.results_accepted, s.results_submitted);
  EXPECT_EQ(ResultsOf(attacker), s.results_accepted);
}

// The harness plays the attacker by hand with another host's accepted result.
TEST_F(ProtocolAttackTest, AnotherHostsResultIsRefusedHoweverItIsReplayed) {
  const std::int64_t job_id = SubmitJob(DigitsJob(2));
  auto victim = NewDonor("victim");
  auto attacker = NewDonor("attacker");
  client::RunnerOptions options = OneUnit();
  options.kinds = {std::string(common::kUnitFinetune)};
  std::atomic<bool> stop{false};
  ASSERT_EQ(NewRunner(*victim, options)->Run(stop).results_accepted, 1);

  auto victims = store_->ListResults(job_id, 0, std::string(common::kUnitFinetune));
  ASSERT_TRUE(victims && victims->size() == 1);
  const std::string accepted = victims->front().envelope_json;
  auto envelope = common::ParseEnvelope(accepted);
  ASSERT_TRUE(envelope);
  auto payload = common::ParseResultPayload(envelope->payload);
  ASSERT_TRUE(payload);
  ASSERT_EQ(payload->host_id, victim->registration.host_id);

  const std::int64_t results_before = CountResults();
  const std::int64_t victim_balance = DonorBalance(victim->registration.host_id);
  const Snapshot before = Take(job_id);
  auto http = NewHttp();
  auto post = [&](const std::string& body) {
    auto r = Post(*http, "/v1/results", body, attacker->registration.token);
    EXPECT_TRUE(r) << r.error().ToString();
    return r ? r->status : 0;
  };
  constexpr int kRepeats = 10;
  for (int i = 0; i < kRepeats; ++i) {
    // The victim's envelope as it is: signed by a key that is not the attacker's.
    EXPECT_EQ(post(accepted), 403) << "replay " << i;
    // Re-signed by the attacker (a different envelope each time), still naming the victim.
    common::ResultPayload as_victim = *payload;
    as_victim.wall_seconds += i + 1;
    EXPECT_EQ(
        post(common::SerializeEnvelope(common::SignPayload(
            *attacker->key, common::kDomainResult, common::SerializeResultPayload(as_victim)))),
        403)
        << "re-signed as the victim " << i;
    // Re-signed by the attacker in its own name: the unit already has the victim's result.
    common::ResultPayload as_attacker = as_victim;
    as_attacker.host_id = attacker->registration.host_id;
    EXPECT_EQ(
        post(common::SerializeEnvelope(common::SignPayload(
            *attacker->key, common::kDomainResult, common::SerializeResultPayload(as_attacker)))),
        409)
        << "re-signed as the attacker " << i;
  }
  EXPECT_EQ(CountResults(), results_before);
  ExpectSame(before, Take(job_id));
  EXPECT_EQ(ResultsOf(attacker->registration.host_id), 0);
  EXPECT_EQ(DonorBalance(attacker->registration.host_id), 0);
  EXPECT_EQ(DonorBalance(victim->registration.host_id), victim_balance);
}

}  // namespace
}  // namespace ubcp::itest

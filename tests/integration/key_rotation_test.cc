// SPDX-License-Identifier: Apache-2.0
// Key rotation end to end: a donor that pins the offline root key follows the coordinator to a
// new online key, and refuses a rollback to the retired one.
#include <gtest/gtest.h>

#include "integration/loop_fixture.h"
#include "ubcp/common/key_statement.h"

namespace ubcp::itest {
namespace {

class KeyRotationLoopTest : public LoopTest {
 protected:
  // The coordinator restarted with another signing key and statement (the server keeps going).
  void Restart(const common::SigningKey& key, const std::string& statement) {
    coordinator::CoordinatorConfig config = config_;
    config.key_statement = statement;
    auto service = std::make_unique<coordinator::Coordinator>(
        *store_, *blobs_, key, [this] { return now_.load(); }, config);
    auto api = std::make_unique<coordinator::Api>(*service, 1 << 20);
    api_.swap(api);
    service_.swap(service);
  }
  std::string Statement(std::int64_t version, const common::SigningKey& online) {
    common::KeyStatement s;
    s.version = version;
    s.online_key = online.public_key().Hex();
    s.issued_at = now_ - 10;
    s.expires_at = now_ + 86400;
    return common::SerializeEnvelope(common::CertifyOnlineKey(root_, s));
  }
  client::RunSummary RunOneUnit(Donor& donor, const common::TrustedKeys& trusted) {
    client::RunnerOptions options;
    options.executor = client::MakeInProcessExecutor();
    options.max_units = 1;
    options.idle_poll_s = 0.05;
    options.max_idle_polls = 40;
    options.max_backoff_s = 0.05;
    client::Runner runner(*donor.api, *donor.state, *donor.key, trusted, donor.registration.host_id,
                          options);
    std::atomic<bool> stop{false};
    return runner.Run(stop);
  }

  common::SigningKey root_ = common::SigningKey::Generate();
};

TEST_F(KeyRotationLoopTest, DonorsFollowRotationsAndRefuseRollbacks) {
  auto none = NewHttp()->Request("GET", "/v1/keys", {}, {}, {});
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 404);  // no root configured yet

  const std::string v1 = Statement(1, *signing_key_);
  Restart(*signing_key_, v1);
  SubmitJob(DigitsJob(2));
  auto donor = NewDonor("donor");
  auto trusted = client::RefreshRootedTrust(*donor->api, *donor->state, root_.public_key(), now_);
  ASSERT_TRUE(trusted) << trusted.error().ToString();
  EXPECT_EQ(trusted->version, 1);
  EXPECT_EQ(RunOneUnit(*donor, *trusted).units_done, 1);

  // Rotation: a new online key certified as version 2. The donor, still at version 1, sees a
  // manifest from an unknown key, fetches the statement and carries on.
  const common::SigningKey next = common::SigningKey::Generate();
  Restart(next, Statement(2, next));
  client::RunSummary after = RunOneUnit(*donor, *trusted);
  EXPECT_EQ(after.units_done, 1);
  EXPECT_EQ(after.units_refused, 0);
  auto saved = donor->state->LoadTrustedKeys(root_.public_key());
  ASSERT_TRUE(saved);
  EXPECT_EQ(saved->version, 2);
  EXPECT_EQ(*saved->online, next.public_key());

  // Rollback: a coordinator that signs with the retired key and serves the old statement.
  Restart(*signing_key_, v1);
  common::WorkRequest request;
  auto work = donor->api->RequestWork(request);
  ASSERT_TRUE(work && work->has_value());
  auto ok = common::VerifyManifestSigner(*saved, **work, now_);
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, common::Errc::kBadSignature);
  auto rolled_back =
      client::RefreshRootedTrust(*donor->api, *donor->state, root_.public_key(), now_);
  ASSERT_FALSE(rolled_back);
  EXPECT_EQ(rolled_back.error().code, common::Errc::kConflict);
  EXPECT_EQ(donor->state->LoadTrustedKeys(root_.public_key())->version, 2);

  // A statement signed by another root is refused as well.
  const common::SigningKey impostor = common::SigningKey::Generate();
  common::KeyStatement forged;
  forged.version = 3;
  forged.online_key = impostor.public_key().Hex();
  forged.issued_at = now_ - 10;
  forged.expires_at = now_ + 86400;
  Restart(impostor, common::SerializeEnvelope(common::CertifyOnlineKey(impostor, forged)));
  auto forged_refresh =
      client::RefreshRootedTrust(*donor->api, *donor->state, root_.public_key(), now_);
  ASSERT_FALSE(forged_refresh);
  EXPECT_EQ(forged_refresh.error().code, common::Errc::kBadSignature);
}

}  // namespace
}  // namespace ubcp::itest

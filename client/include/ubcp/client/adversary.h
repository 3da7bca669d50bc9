// SPDX-License-Identifier: Apache-2.0
#pragma once
// A dishonest donor, for robustness experiments (issue #4's attack simulator). Only
// `ubcp-client --adversary <mode>` turns this on; the default is honest.
//
// Content attacks: the coordinator sees a well-formed, correctly signed result whose content is
// hostile (replication and robust aggregation must catch them, not signature checks).
//   sign_flip      -scale x delta        (pushes the model backwards)
//   scale          scale x delta         (outsized, in the honest direction)
//   noise          Gaussian noise with scale x the delta's RMS per element, seeded
//   zeros          an all-zero update    (lazy: no training was needed)
//   label_flip     trains honestly on poisoned labels: label y becomes classes - 1 - y
//   stale          lazy: no training; every finetune unit gets the first finetune update again
// Protocol attacks: the coordinator must refuse (or, for a replay, not count) every one.
//   replay         posts again, unchanged, a result envelope it posted for an earlier unit
//   wrong_version  answers with a result that binds the previous manifest it received (an older
//                  model): that manifest's hash and attempt, signed correctly by its key
//   forged         the envelope names its registered key as signer, but a fresh key signed it
// The first unit of stale, replay and wrong_version is done honestly: there is nothing earlier
// to reuse yet.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ubcp/common/crypto.h"
#include "ubcp/common/result.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"

namespace ubcp::client {

enum class AdversaryMode {
  kHonest,
  kSignFlip,
  kScale,
  kNoise,
  kZeros,
  kLabelFlip,
  kStale,
  kReplay,
  kWrongVersion,
  kForged,
};

struct Adversary {
  AdversaryMode mode = AdversaryMode::kHonest;
  double scale = 10.0;  // > 0
};

// "honest", "sign_flip", "scale", "noise", "zeros", "label_flip", "stale", "replay",
// "wrong_version", "forged"; kInvalidArgument otherwise.
common::Result<AdversaryMode> ParseAdversaryMode(std::string_view name);
// The name ParseAdversaryMode reads.
std::string_view AdversaryModeName(AdversaryMode mode);

// True for replay, wrong_version and forged: modes whose results break the protocol.
bool IsProtocolAttack(AdversaryMode mode);

// Before training: label_flip poisons the shard's labels 'y' in place (other modes: no-op).
common::Status PoisonLabels(const Adversary& adversary, int classes, common::TensorList& data);
// After training: applies `adversary` to a finetune delta in place; deterministic for a given
// seed (label_flip, stale and the protocol attacks: no-op here).
// kInvalidArgument for a scale that is not positive and finite.
common::Status ApplyAdversary(const Adversary& adversary, std::uint64_t seed,
                              common::TensorList& delta);

// forged: `payload` signed in the result domain by a freshly generated key, in an envelope that
// names `claimed`'s public key as its signer, so that the signature does not verify.
common::SignedEnvelope ForgeResult(const common::SigningKey& claimed, std::string payload);

// A finetune update computed for an earlier unit, kept by a stale adversary.
struct KeptUpdate {
  common::EncodedBlob update;
  common::ResultMetrics metrics;
  double wall_seconds = 0;
};

// The envelope a donor posts for a unit, and whether it is tampered with at the protocol level.
struct AdversaryAnswer {
  common::SignedEnvelope envelope;
  bool tampered = false;  // not the honest answer: the coordinator must not count it
};

// What a dishonest donor remembers from one unit to the next, and how it turns its honest answer
// into its attack. Honest and content-only modes pass everything through unchanged. One per
// runner, kept across its runs; not thread-safe.
class AdversaryMemory {
 public:
  explicit AdversaryMemory(Adversary adversary) : adversary_(adversary) {}

  // stale: the update to submit instead of training for a unit of `kind`; nullptr when the unit
  // must be computed (other modes, eval units, or no finetune update kept yet).
  const KeptUpdate* StaleUpdate(std::string_view kind) const;
  // stale: keeps the first finetune update computed (no-op otherwise).
  void KeepUpdate(std::string_view kind, const common::EncodedBlob& update,
                  const common::ResultMetrics& metrics, double wall_seconds);

  // The envelope to post for `result`, the honest answer (its manifest_hash and attempt name the
  // manifest just received), signed by `key` unless the mode says otherwise:
  //   replay         the envelope posted for the previous unit, unchanged
  //   wrong_version  `result` rebound to the previous manifest's hash and attempt, then signed
  //   forged         ForgeResult
  // With nothing earlier to reuse, the honest answer. Remembers the manifest and the envelope.
  AdversaryAnswer Answer(const common::SigningKey& key, common::ResultPayload result);

 private:
  struct ManifestSeen {
    std::string hash;
    int attempt = 0;
  };
  Adversary adversary_;
  std::optional<KeptUpdate> stale_;
  std::optional<ManifestSeen> previous_manifest_;
  std::optional<common::SignedEnvelope> previous_envelope_;
};

}  // namespace ubcp::client

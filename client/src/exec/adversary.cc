// SPDX-License-Identifier: Apache-2.0
#include "ubcp/client/adversary.h"

#include <cmath>
#include <random>

namespace ubcp::client {
using common::Errc;
using common::MakeError;

common::Result<AdversaryMode> ParseAdversaryMode(std::string_view name) {
  if (name == "honest") return AdversaryMode::kHonest;
  if (name == "sign_flip") return AdversaryMode::kSignFlip;
  if (name == "scale") return AdversaryMode::kScale;
  if (name == "noise") return AdversaryMode::kNoise;
  if (name == "zeros") return AdversaryMode::kZeros;
  if (name == "label_flip") return AdversaryMode::kLabelFlip;
  if (name == "stale") return AdversaryMode::kStale;
  if (name == "replay") return AdversaryMode::kReplay;
  if (name == "wrong_version") return AdversaryMode::kWrongVersion;
  if (name == "forged") return AdversaryMode::kForged;
  return MakeError(Errc::kInvalidArgument, "unknown adversary mode '" + std::string(name) + "'");
}

std::string_view AdversaryModeName(AdversaryMode mode) {
  switch (mode) {
    case AdversaryMode::kHonest:
      return "honest";
    case AdversaryMode::kSignFlip:
      return "sign_flip";
    case AdversaryMode::kScale:
      return "scale";
    case AdversaryMode::kNoise:
      return "noise";
    case AdversaryMode::kZeros:
      return "zeros";
    case AdversaryMode::kLabelFlip:
      return "label_flip";
    case AdversaryMode::kStale:
      return "stale";
    case AdversaryMode::kReplay:
      return "replay";
    case AdversaryMode::kWrongVersion:
      return "wrong_version";
    case AdversaryMode::kForged:
      return "forged";
  }
  return "honest";
}

bool IsProtocolAttack(AdversaryMode mode) {
  return mode == AdversaryMode::kReplay || mode == AdversaryMode::kWrongVersion ||
         mode == AdversaryMode::kForged;
}

common::Status PoisonLabels(const Adversary& adversary, int classes, common::TensorList& data) {
  if (adversary.mode != AdversaryMode::kLabelFlip) return {};
  if (classes < 2 || classes > 256) return MakeError(Errc::kInvalidArgument, "bad class count");
  for (auto& t : data) {
    if (t.name != "y") continue;
    for (std::uint8_t& y : t.u8) {
      if (y < classes) y = static_cast<std::uint8_t>(classes - 1 - y);
    }
  }
  return {};
}

common::Status ApplyAdversary(const Adversary& adversary, std::uint64_t seed,
                              common::TensorList& delta) {
  if (!(adversary.scale > 0) || !std::isfinite(adversary.scale)) {
    return MakeError(Errc::kInvalidArgument, "adversary scale must be positive");
  }
  const float scale = static_cast<float>(adversary.scale);
  switch (adversary.mode) {
    case AdversaryMode::kHonest:
    case AdversaryMode::kLabelFlip:
    case AdversaryMode::kStale:
    case AdversaryMode::kReplay:
    case AdversaryMode::kWrongVersion:
    case AdversaryMode::kForged:
      return {};
    case AdversaryMode::kSignFlip:
    case AdversaryMode::kScale: {
      const float factor = adversary.mode == AdversaryMode::kSignFlip ? -scale : scale;
      for (auto& t : delta) {
        for (float& v : t.f32) v *= factor;
      }
      return {};
    }
    case AdversaryMode::kZeros:
      for (auto& t : delta) {
        for (float& v : t.f32) v = 0.0f;
      }
      return {};
    case AdversaryMode::kNoise: {
      double sum_sq = 0;
      std::size_t count = 0;
      for (const auto& t : delta) {
        for (float v : t.f32) sum_sq += static_cast<double>(v) * v;
        count += t.f32.size();
      }
      const double rms = count > 0 ? std::sqrt(sum_sq / static_cast<double>(count)) : 0.0;
      std::mt19937_64 rng(seed);
      std::normal_distribution<double> normal(0.0, std::max(rms, 1e-6) * adversary.scale);
      for (auto& t : delta) {
        for (float& v : t.f32) v = static_cast<float>(normal(rng));
      }
      return {};
    }
  }
  return MakeError(Errc::kInvalidArgument, "unknown adversary mode");
}

common::SignedEnvelope ForgeResult(const common::SigningKey& claimed, std::string payload) {
  const common::SigningKey impostor = common::SigningKey::Generate();
  common::SignedEnvelope env =
      common::SignPayload(impostor, common::kDomainResult, std::move(payload));
  env.signer = claimed.public_key().Hex();
  return env;
}

const KeptUpdate* AdversaryMemory::StaleUpdate(std::string_view kind) const {
  if (adversary_.mode != AdversaryMode::kStale || kind != common::kUnitFinetune || !stale_) {
    return nullptr;
  }
  return &*stale_;
}

void AdversaryMemory::KeepUpdate(std::string_view kind, const common::EncodedBlob& update,
                                 const common::ResultMetrics& metrics, double wall_seconds) {
  if (adversary_.mode == AdversaryMode::kStale && kind == common::kUnitFinetune && !stale_) {
    stale_ = KeptUpdate{update, metrics, wall_seconds};
  }
}

AdversaryAnswer AdversaryMemory::Answer(const common::SigningKey& key,
                                        common::ResultPayload result) {
  const ManifestSeen current{result.manifest_hash, result.attempt};
  AdversaryAnswer answer;
  if (adversary_.mode == AdversaryMode::kReplay && previous_envelope_) {
    answer = {*previous_envelope_, true};
  } else if (adversary_.mode == AdversaryMode::kForged) {
    answer = {ForgeResult(key, common::SerializeResultPayload(result)), true};
  } else {
    if (adversary_.mode == AdversaryMode::kWrongVersion && previous_manifest_ &&
        previous_manifest_->hash != current.hash) {
      result.manifest_hash = previous_manifest_->hash;
      result.attempt = previous_manifest_->attempt;
      answer.tampered = true;
    }
    answer.envelope =
        common::SignPayload(key, common::kDomainResult, common::SerializeResultPayload(result));
  }
  // Only the protocol attacks look back; an honest donor keeps nothing.
  if (IsProtocolAttack(adversary_.mode)) {
    previous_manifest_ = current;
    previous_envelope_ = answer.envelope;
  }
  return answer;
}

}  // namespace ubcp::client

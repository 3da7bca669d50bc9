// SPDX-License-Identifier: Apache-2.0
#include "fuzz/fuzz_targets.h"

#include <string_view>

#include "ubcp/common/key_statement.h"
#include "ubcp/common/tensor_codec.h"
#include "ubcp/common/wire.h"

namespace ubcp::fuzz {

int FuzzWire(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace ubcp::common;
  (void)ParseEnvelope(text);
  (void)ParseHostRegistration(text);
  (void)ParseHostRegistered(text);
  (void)ParseWorkRequest(text);
  (void)ParseManifest(text);
  (void)ParseResultPayload(text);
  (void)ParseResultAck(text);
  (void)ParseJobSpec(text);
  (void)ParseJobCreated(text);
  (void)ParseJobQuote(text);
  (void)ParseCreditsStatus(text);
  (void)ParseGrantRequest(text);
  (void)ParseJobList(text);
  (void)ParseCapacityReport(text);
  (void)ParseDonorProfile(text);
  (void)ParseContribution(text);
  (void)ParseLeaderboard(text);
  (void)ParseCatalog(text);
  (void)ParseJobStatus(text);
  (void)ParseErrorBody(text);
  (void)ParseKeyStatement(text);
  return 0;
}

int FuzzTensorBlob(const std::uint8_t* data, std::size_t size) {
  common::TensorLimits limits;
  limits.max_tensors = 16;
  limits.max_elements = 1 << 20;
  (void)common::DecodeTensorBlob(common::ByteSpan(data, size), 8u << 20, limits);
  return 0;
}

}  // namespace ubcp::fuzz

// SPDX-License-Identifier: Apache-2.0
// Range and Content-Range headers (RFC 9110 §14): what is ignored, what is unsatisfiable, what
// is served, and which upload chunk headers are refused.
#include "ubcp/coordinator/byte_range.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace ubcp::coordinator {
namespace {

using common::Errc;

// The range a header selects of `total` bytes; nullopt when unsatisfiable. The header must
// parse (the test fails otherwise).
std::optional<ByteRange> Select(std::string_view header, std::uint64_t total) {
  auto request = ParseRangeHeader(header);
  EXPECT_TRUE(request.has_value()) << header;
  if (!request) return std::nullopt;
  return ResolveRange(*request, total);
}

TEST(RangeHeaderTest, FirstAndLastSelectThoseBytes) {
  EXPECT_EQ(Select("bytes=0-9", 100), (ByteRange{0, 9, 100}));
  EXPECT_EQ(Select("bytes=10-10", 100), (ByteRange{10, 10, 100}));
  EXPECT_EQ(Select("bytes=99-99", 100), (ByteRange{99, 99, 100}));
  EXPECT_EQ(Select("bytes=0-9", 100)->length(), 10u);
}

TEST(RangeHeaderTest, OpenEndedAndOverlongRangesStopAtTheLastByte) {
  EXPECT_EQ(Select("bytes=40-", 100), (ByteRange{40, 99, 100}));
  EXPECT_EQ(Select("bytes=40-1000", 100), (ByteRange{40, 99, 100}));
  // A last position past 2^64 is still just "to the end".
  EXPECT_EQ(Select("bytes=5-99999999999999999999999", 100), (ByteRange{5, 99, 100}));
}

TEST(RangeHeaderTest, SuffixSelectsTheFinalBytes) {
  EXPECT_EQ(Select("bytes=-10", 100), (ByteRange{90, 99, 100}));
  EXPECT_EQ(Select("bytes=-100", 100), (ByteRange{0, 99, 100}));
  EXPECT_EQ(Select("bytes=-5000", 100), (ByteRange{0, 99, 100}));
  EXPECT_EQ(Select("bytes=-99999999999999999999999", 100), (ByteRange{0, 99, 100}));
}

TEST(RangeHeaderTest, UnitIsCaseInsensitiveAndOuterWhitespaceIsIgnored) {
  EXPECT_EQ(Select("Bytes=1-2", 10), (ByteRange{1, 2, 10}));
  EXPECT_EQ(Select("BYTES=1-2", 10), (ByteRange{1, 2, 10}));
  EXPECT_EQ(Select("  bytes=1-2\t", 10), (ByteRange{1, 2, 10}));
}

TEST(RangeHeaderTest, RangesPastTheEndAreUnsatisfiable) {
  EXPECT_FALSE(Select("bytes=100-", 100));
  EXPECT_FALSE(Select("bytes=100-200", 100));
  EXPECT_FALSE(Select("bytes=99999999999999999999999-", 100));
  EXPECT_FALSE(Select("bytes=-0", 100));  // a zero-length suffix
  // Nothing of an empty representation can be selected.
  EXPECT_FALSE(Select("bytes=0-", 0));
  EXPECT_FALSE(Select("bytes=-1", 0));
}

TEST(RangeHeaderTest, MalformedOrUnsupportedHeadersAreIgnored) {
  for (std::string_view header :
       {"", "bytes", "bytes=", "bytes=-", "bytes=a-b", "bytes=1-a", "bytes= 1-2", "bytes=1 -2",
        "bytes=+1-2", "bytes=0x1-2", "bytes=1-2-3", "bytes=5-4", "items=0-1", "bytes0-1",
        "bytes=0-1,5-6", "bytes=0-1,", "bytes=-1-2", "=0-1", "bytes==0-1"}) {
    EXPECT_FALSE(ParseRangeHeader(header).has_value()) << "'" << header << "'";
  }
}

TEST(RangeHeaderTest, HeaderValuesAreFormattedAsRfc9110Says) {
  EXPECT_EQ(ContentRangeHeader({0, 9, 100}), "bytes 0-9/100");
  EXPECT_EQ(ContentRangeHeader({90, 99, 100}), "bytes 90-99/100");
  EXPECT_EQ(UnsatisfiedContentRange(100), "bytes */100");
}

TEST(ContentRangeTest, ParsesAChunkOfAKnownTotal) {
  auto r = ParseContentRange("bytes 0-1023/4096");
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(*r, (ByteRange{0, 1023, 4096}));
  EXPECT_EQ(r->length(), 1024u);
  auto last = ParseContentRange("Bytes 4095-4095/4096");
  ASSERT_TRUE(last) << last.error().ToString();
  EXPECT_EQ(*last, (ByteRange{4095, 4095, 4096}));
}

TEST(ContentRangeTest, RefusesEverythingElse) {
  for (std::string_view header :
       {"", "bytes", "bytes 0-1", "bytes 0-1/*", "bytes */10", "bytes 1-0/10", "bytes 0-10/10",
        "bytes 10-10/10", "bytes 0-1/0", "bytes=0-1/10", "items 0-1/10", "bytes 0 -1/10",
        "bytes -1/10", "bytes 0-/10", "bytes 0-1/1a", "bytes 0-1/99999999999999999999999",
        "bytes 0-1/10/20", "bytes 0-1-2/10", "bytes  0-1/10"}) {
    auto r = ParseContentRange(header);
    ASSERT_FALSE(r) << "'" << header << "'";
    EXPECT_EQ(r.error().code, Errc::kMalformed) << header;
  }
}

}  // namespace
}  // namespace ubcp::coordinator

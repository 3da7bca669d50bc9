// SPDX-License-Identifier: Apache-2.0
// Resumable blob transfers against the real coordinator over TLS (docs/PROTOCOL.md, "Resumable
// transfers"): the server's answers to Range and Content-Range requests, then the client's
// DownloadBlob and UploadBlob interrupted by a failing network and resumed by a second call.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "integration/loop_fixture.h"

namespace ubcp::itest {
namespace {

using common::Bytes;
using common::Errc;

constexpr std::uint64_t kMaxUpdate = 200000;

Bytes Pattern(std::size_t n, std::uint32_t seed) {
  Bytes b(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& byte : b) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    byte = static_cast<std::uint8_t>(x);
  }
  return b;
}

std::string AsText(const Bytes& b) { return std::string(b.begin(), b.end()); }

Bytes ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::uint64_t ReceivedIn(const std::string& json) {
  boost::system::error_code ec;
  auto value = boost::json::parse(json, ec);
  if (ec || !value.is_object() || !value.as_object().contains("received")) return UINT64_MAX;
  return value.as_object().at("received").to_number<std::uint64_t>();
}

// The real HttpsClient behind a network that fails on purpose: after `blob_requests_left`
// requests to /v1/blobs/ have gone through, the next ones fail with kNetwork before anything
// is sent (a dropped connection). Counts what the coordinator sent back for blob requests.
class FaultyNetwork final : public client::HttpsClient {
 public:
  explicit FaultyNetwork(client::HttpsClient& real) : real_(real) {}

  common::Result<client::ClientResponse> Request(std::string_view method, std::string_view target,
                                                 std::string_view body,
                                                 std::string_view content_type,
                                                 std::string_view bearer_token) override {
    auto reply = Send({method, target, body, content_type, bearer_token, {}});
    if (!reply) return reply.error();
    return reply->response;
  }

  common::Result<client::ClientReply> Send(const client::ClientRequest& request) override {
    const bool blob = request.target.starts_with("/v1/blobs/");
    if (blob) {
      if (blob_requests_left == 0) return common::MakeError(Errc::kNetwork, "connection reset");
      if (blob_requests_left > 0) --blob_requests_left;
      ++blob_requests;
    }
    if (before_send) before_send(request);
    auto reply = real_.Send(request);
    if (reply && blob && request.method == "GET") body_bytes_served += reply->response.body.size();
    return reply;
  }

  int blob_requests_left = -1;  // -1: never fail
  int blob_requests = 0;
  std::uint64_t body_bytes_served = 0;
  std::function<void(const client::ClientRequest&)> before_send;

 private:
  client::HttpsClient& real_;
};

class ResumableTransferTest : public LoopTest {
 protected:
  void Configure(coordinator::CoordinatorConfig& config) override {
    config.max_update_bytes = kMaxUpdate;
  }
  void TearDown() override {
    http_.reset();  // an idle connection would hold up the server's graceful stop
    LoopTest::TearDown();
  }

  common::Result<client::ClientReply> Get(const std::string& target, const std::string& token,
                                          client::HeaderList headers = {}) {
    return http_->Send({"GET", target, {}, {}, token, std::move(headers)});
  }
  common::Result<client::ClientReply> Put(const std::string& target, std::string_view body,
                                          const std::string& token,
                                          client::HeaderList headers = {}) {
    return http_->Send(
        {"PUT", target, body, "application/octet-stream", token, std::move(headers)});
  }
  // PUT of data[first, last] as a chunk of data.size() bytes of blob `id`.
  common::Result<client::ClientReply> PutChunk(const std::string& id, const Bytes& data,
                                               std::size_t first, std::size_t last,
                                               const std::string& token) {
    const std::string body(data.begin() + first, data.begin() + last + 1);
    return Put("/v1/blobs/" + id, body, token,
               {{"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) +
                                      "/" + std::to_string(data.size())}});
  }
  std::vector<fs::path> StagingFiles() const {
    std::vector<fs::path> files;
    std::error_code ec;
    for (fs::directory_iterator it(dir_ / "blobs" / "staging", ec), end; !ec && it != end;
         it.increment(ec)) {
      files.push_back(it->path());
    }
    return files;
  }

  std::unique_ptr<client::HttpsClient> http_;
};

TEST_F(ResumableTransferTest, RangedDownloadsFollowRfc9110) {
  http_ = NewHttp();
  const Bytes data = Pattern(100000, 1);
  auto id = blobs_->Put(data);
  ASSERT_TRUE(id);
  const std::string target = "/v1/blobs/" + *id;
  auto donor = NewDonor("d");

  struct Case {
    std::string range;
    int status;
    std::size_t first, last;  // of `data`, for 206
    std::string content_range;
  };
  const std::vector<Case> cases = {
      {"bytes=0-9", 206, 0, 9, "bytes 0-9/100000"},
      {"bytes=1000-1999", 206, 1000, 1999, "bytes 1000-1999/100000"},
      {"bytes=99990-", 206, 99990, 99999, "bytes 99990-99999/100000"},
      {"bytes=99000-200000", 206, 99000, 99999, "bytes 99000-99999/100000"},
      {"bytes=-5", 206, 99995, 99999, "bytes 99995-99999/100000"},
      {"bytes=100000-", 416, 0, 0, "bytes */100000"},
      {"bytes=100000-100010", 416, 0, 0, "bytes */100000"},
      {"bytes=-0", 416, 0, 0, "bytes */100000"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.range);
    // Hosts and accounts may both read blobs.
    for (const std::string& token : {donor->registration.token, token_}) {
      auto r = Get(target, token, {{"Range", c.range}});
      ASSERT_TRUE(r) << r.error().ToString();
      EXPECT_EQ(r->response.status, c.status) << r->response.body;
      EXPECT_EQ(client::FindHeader(r->headers, "Content-Range"), c.content_range);
      if (c.status == 206) {
        EXPECT_EQ(r->response.body, std::string(data.begin() + c.first, data.begin() + c.last + 1));
        EXPECT_EQ(client::FindHeader(r->headers, "Accept-Ranges"), "bytes");
      }
    }
  }
  // Without a Range, and with one that must be ignored (malformed, invalid, several ranges,
  // another unit): the whole blob, 200, and the server says it takes ranges.
  for (const std::string& range :
       {std::string(), std::string("bytes=5-2"), std::string("bytes=0-1,5-6"),
        std::string("bytes=x-"), std::string("items=0-1")}) {
    SCOPED_TRACE(range);
    client::HeaderList headers;
    if (!range.empty()) headers.emplace_back("Range", range);
    auto r = Get(target, token_, headers);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(r->response.status, 200);
    EXPECT_EQ(r->response.body, AsText(data));
    EXPECT_EQ(client::FindHeader(r->headers, "Accept-Ranges"), "bytes");
    EXPECT_FALSE(client::FindHeader(r->headers, "Content-Range"));
  }
  // Ranges change nothing about who may read and what exists.
  auto anonymous = Get(target, "", {{"Range", "bytes=0-9"}});
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->response.status, 401);
  auto absent = Get("/v1/blobs/" + common::ContentId(common::AsBytes("absent")), token_,
                    {{"Range", "bytes=0-9"}});
  ASSERT_TRUE(absent);
  EXPECT_EQ(absent->response.status, 404);
}

TEST_F(ResumableTransferTest, ResumableUploadOverHttps) {
  http_ = NewHttp();
  auto a = NewDonor("a");
  auto b = NewDonor("b");
  const std::string& token = a->registration.token;
  const Bytes data = Pattern(100000, 2);
  const std::string id = common::ContentId(data);
  const std::string uploads = "/v1/uploads/" + id;

  auto progress = Get(uploads, token);
  ASSERT_TRUE(progress);
  EXPECT_EQ(progress->response.status, 200);
  EXPECT_EQ(ReceivedIn(progress->response.body), 0u);

  auto first = PutChunk(id, data, 0, 39999, token);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->response.status, 202) << first->response.body;
  EXPECT_EQ(ReceivedIn(first->response.body), 40000u);
  // A chunk past what is staged: 409, and where to resume.
  auto gap = PutChunk(id, data, 80000, 99999, token);
  ASSERT_TRUE(gap);
  EXPECT_EQ(gap->response.status, 409);
  EXPECT_EQ(client::FindHeader(gap->headers, "Upload-Offset"), "40000");
  auto second = PutChunk(id, data, 40000, 79999, token);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->response.status, 202);
  EXPECT_EQ(ReceivedIn(Get(uploads, token)->response.body), 80000u);
  EXPECT_FALSE(blobs_->Has(id));

  // Another host's staging of the same id is its own.
  EXPECT_EQ(ReceivedIn(Get(uploads, b->registration.token)->response.body), 0u);
  auto foreign = PutChunk(id, data, 80000, 99999, b->registration.token);
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->response.status, 409);
  EXPECT_EQ(client::FindHeader(foreign->headers, "Upload-Offset"), "0");

  auto last = PutChunk(id, data, 80000, 99999, token);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->response.status, 201) << last->response.body;
  auto stored = blobs_->Get(id, data.size());
  ASSERT_TRUE(stored) << stored.error().ToString();
  EXPECT_EQ(*stored, data);
  EXPECT_EQ(ReceivedIn(Get(uploads, token)->response.body), data.size());
  EXPECT_EQ(ReceivedIn(Get(uploads, b->registration.token)->response.body), data.size());
  EXPECT_TRUE(StagingFiles().empty());

  // Uploads are a host's business: an account token or none is refused.
  EXPECT_EQ(Get(uploads, token_)->response.status, 401);
  EXPECT_EQ(Get(uploads, "")->response.status, 401);
  EXPECT_EQ(PutChunk(id, data, 0, 9, token_)->response.status, 401);
}

TEST_F(ResumableTransferTest, UploadChunksAreCheckedAndPlainPutStillWorks) {
  http_ = NewHttp();
  auto a = NewDonor("a");
  const std::string& token = a->registration.token;

  // Over the update limit, announced by the first chunk: 413, nothing staged.
  const Bytes big = Pattern(kMaxUpdate + 1, 3);
  auto too_large = PutChunk(common::ContentId(big), big, 0, 999, token);
  ASSERT_TRUE(too_large);
  EXPECT_EQ(too_large->response.status, 413);
  EXPECT_TRUE(StagingFiles().empty());

  // Malformed Content-Range, and a body of another length than its range: 400.
  const Bytes data = Pattern(5000, 4);
  const std::string id = common::ContentId(data);
  for (const char* range : {"bytes 0-99", "bytes 0-99/*", "bytes 100-99/5000", "bytes 0-5000/5000",
                            "chunks 0-99/5000"}) {
    auto r = Put("/v1/blobs/" + id, AsText(data).substr(0, 100), token, {{"Content-Range", range}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->response.status, 400) << range;
  }
  auto short_body = Put("/v1/blobs/" + id, AsText(data).substr(0, 99), token,
                        {{"Content-Range", "bytes 0-99/5000"}});
  ASSERT_TRUE(short_body);
  EXPECT_EQ(short_body->response.status, 400);
  EXPECT_TRUE(StagingFiles().empty());

  // Bytes that do not hash to the id: refused when complete, and the staging is gone.
  const Bytes wrong = Pattern(5000, 5);
  ASSERT_EQ(PutChunk(id, wrong, 0, 2499, token)->response.status, 202);
  EXPECT_EQ(StagingFiles().size(), 1u);
  auto mismatch = PutChunk(id, wrong, 2500, 4999, token);
  ASSERT_TRUE(mismatch);
  EXPECT_EQ(mismatch->response.status, 400);
  EXPECT_NE(mismatch->response.body.find("hash_mismatch"), std::string::npos)
      << mismatch->response.body;
  EXPECT_TRUE(StagingFiles().empty());
  EXPECT_FALSE(blobs_->Has(id));
  EXPECT_EQ(ReceivedIn(Get("/v1/uploads/" + id, token)->response.body), 0u);

  // Old clients: a plain PUT of the whole blob, as before.
  auto plain = Put("/v1/blobs/" + id, AsText(data), token);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->response.status, 201) << plain->response.body;
  EXPECT_EQ(*blobs_->Get(id, data.size()), data);
  auto plain_wrong = Put("/v1/blobs/" + common::ContentId(big), AsText(data), token);
  ASSERT_TRUE(plain_wrong);
  EXPECT_EQ(plain_wrong->response.status, 400);
}

TEST_F(ResumableTransferTest, DownloadResumesWhereItStopped) {
  const Bytes data = Pattern(100000, 6);
  auto id = blobs_->Put(data);
  ASSERT_TRUE(id);
  const common::BlobRef ref{*id, data.size(), data.size()};
  auto donor = NewDonor("d");
  FaultyNetwork net(*donor->http);
  client::CoordinatorApi api(net);
  api.set_token(donor->registration.token);
  constexpr std::size_t kChunk = 16384;
  api.set_chunk_bytes(kChunk);
  const fs::path dest = dir_ / "d" / "blob";
  fs::path part = dest;
  part += ".part";

  // The network drops after 3 chunks.
  net.blob_requests_left = 3;
  std::uint64_t first = 0;
  auto interrupted = api.DownloadBlob(ref, dest, &first);
  ASSERT_FALSE(interrupted);
  EXPECT_EQ(interrupted.error().code, Errc::kNetwork);
  EXPECT_EQ(first, 3 * kChunk);
  EXPECT_EQ(fs::file_size(part), 3 * kChunk);
  EXPECT_FALSE(fs::exists(dest));

  // The next call asks only for the rest.
  net.blob_requests_left = -1;
  std::uint64_t second = 0;
  auto resumed = api.DownloadBlob(ref, dest, &second);
  ASSERT_TRUE(resumed) << resumed.error().ToString();
  EXPECT_EQ(first + second, data.size());
  EXPECT_EQ(net.body_bytes_served, data.size());
  EXPECT_EQ(net.blob_requests, 7);  // ceil(100000 / 16384)
  EXPECT_EQ(ReadFile(dest), data);
  EXPECT_FALSE(fs::exists(part));

  // Already there: nothing is fetched.
  const int requests = net.blob_requests;
  std::uint64_t third = 1;
  ASSERT_TRUE(api.DownloadBlob(ref, dest, &third));
  EXPECT_EQ(third, 0u);
  EXPECT_EQ(net.blob_requests, requests);
}

TEST_F(ResumableTransferTest, CorruptPartIsDiscardedAndTheNextTryStartsOver) {
  const Bytes data = Pattern(50000, 7);
  auto id = blobs_->Put(data);
  ASSERT_TRUE(id);
  const common::BlobRef ref{*id, data.size(), data.size()};
  auto donor = NewDonor("d");
  FaultyNetwork net(*donor->http);
  client::CoordinatorApi api(net);
  api.set_token(donor->registration.token);
  api.set_chunk_bytes(10000);
  const fs::path dest = dir_ / "d" / "blob";
  fs::path part = dest;
  part += ".part";

  net.blob_requests_left = 2;
  ASSERT_FALSE(api.DownloadBlob(ref, dest));
  Bytes kept = ReadFile(part);
  ASSERT_EQ(kept.size(), 20000u);
  kept[12345] ^= 0xff;  // a disk or a crash damaged what was kept
  WriteFile(part, kept);

  net.blob_requests_left = -1;
  std::uint64_t rest = 0;
  auto damaged = api.DownloadBlob(ref, dest, &rest);
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, Errc::kHashMismatch);
  EXPECT_EQ(rest, 30000u);
  EXPECT_FALSE(fs::exists(part));
  EXPECT_FALSE(fs::exists(dest));

  std::uint64_t all = 0;
  auto again = api.DownloadBlob(ref, dest, &all);
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(all, data.size());
  EXPECT_EQ(ReadFile(dest), data);
}

TEST_F(ResumableTransferTest, PartLongerThanTheBlobIsDiscarded) {
  const Bytes data = Pattern(30000, 8);
  auto id = blobs_->Put(data);
  ASSERT_TRUE(id);
  auto donor = NewDonor("d");
  client::CoordinatorApi api(*donor->http);
  api.set_token(donor->registration.token);
  api.set_chunk_bytes(7000);
  const fs::path dest = dir_ / "d" / "blob";
  fs::path part = dest;
  part += ".part";
  WriteFile(part, Pattern(30001, 9));
  std::uint64_t got = 0;
  auto r = api.DownloadBlob({*id, data.size(), data.size()}, dest, &got);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(got, data.size());
  EXPECT_EQ(ReadFile(dest), data);

  // A blob the coordinator has with another size than declared: refused, nothing kept.
  fs::remove(dest);
  auto wrong_size = api.DownloadBlob({*id, data.size() + 10, data.size()}, dest);
  ASSERT_FALSE(wrong_size);
  EXPECT_EQ(wrong_size.error().code, Errc::kHashMismatch);
  EXPECT_FALSE(fs::exists(part));
  EXPECT_FALSE(fs::exists(dest));
}

TEST_F(ResumableTransferTest, UploadResumesWhereItStopped) {
  const Bytes data = Pattern(150000, 10);
  const std::string id = common::ContentId(data);
  auto donor = NewDonor("u");
  FaultyNetwork net(*donor->http);
  client::CoordinatorApi api(net);
  api.set_token(donor->registration.token);
  constexpr std::size_t kChunk = 32768;
  api.set_chunk_bytes(kChunk);

  net.blob_requests_left = 2;
  std::uint64_t first = 0;
  auto interrupted = api.UploadBlob(id, data, &first);
  ASSERT_FALSE(interrupted);
  EXPECT_EQ(interrupted.error().code, Errc::kNetwork);
  EXPECT_EQ(first, 2 * kChunk);
  EXPECT_FALSE(blobs_->Has(id));

  net.blob_requests_left = -1;
  std::uint64_t second = 0;
  auto resumed = api.UploadBlob(id, data, &second);
  ASSERT_TRUE(resumed) << resumed.error().ToString();
  EXPECT_EQ(second, data.size() - 2 * kChunk);
  auto stored = blobs_->Get(id, data.size());
  ASSERT_TRUE(stored) << stored.error().ToString();
  EXPECT_EQ(*stored, data);
  EXPECT_TRUE(StagingFiles().empty());

  // Stored already: a further call sends nothing.
  const int requests = net.blob_requests;
  std::uint64_t third = 1;
  ASSERT_TRUE(api.UploadBlob(id, data, &third));
  EXPECT_EQ(third, 0u);
  EXPECT_EQ(net.blob_requests, requests);
}

TEST_F(ResumableTransferTest, UploadFollowsTheCoordinatorAfterAConflict) {
  // Between the client's look at /v1/uploads and its first chunk, another connection of the
  // same host (a retry still in flight) delivers two chunks: the client's chunk is answered
  // 409, it asks again and sends only the rest.
  const Bytes data = Pattern(100000, 11);
  const std::string id = common::ContentId(data);
  auto donor = NewDonor("u");
  http_ = NewHttp();
  FaultyNetwork net(*donor->http);
  client::CoordinatorApi api(net);
  api.set_token(donor->registration.token);
  api.set_chunk_bytes(25000);
  bool raced = false;
  net.before_send = [&](const client::ClientRequest& request) {
    if (raced || request.method != "PUT") return;
    raced = true;
    ASSERT_EQ(PutChunk(id, data, 0, 24999, donor->registration.token)->response.status, 202);
    ASSERT_EQ(PutChunk(id, data, 25000, 49999, donor->registration.token)->response.status, 202);
  };
  std::uint64_t sent = 0;
  auto r = api.UploadBlob(id, data, &sent);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_TRUE(raced);
  EXPECT_EQ(sent, 25000u + 50000u);  // the refused first chunk, then the two missing ones
  EXPECT_EQ(*blobs_->Get(id, data.size()), data);
}

TEST_F(ResumableTransferTest, EmptyBlobGoesAsAPlainPut) {
  const Bytes empty;
  const std::string id = common::ContentId(empty);
  auto donor = NewDonor("e");
  std::uint64_t sent = 1;
  auto r = donor->api->UploadBlob(id, empty, &sent);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(sent, 0u);
  EXPECT_TRUE(blobs_->Has(id));
  const fs::path dest = dir_ / "e" / "empty";
  ASSERT_TRUE(donor->api->DownloadBlob({id, 0, 0}, dest));
  EXPECT_TRUE(fs::exists(dest));
  EXPECT_EQ(fs::file_size(dest), 0u);
}

}  // namespace
}  // namespace ubcp::itest

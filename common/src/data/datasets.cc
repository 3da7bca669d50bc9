// SPDX-License-Identifier: Apache-2.0
// Dataset loading from the Debian-packaged files. Every file is treated as untrusted input:
// magic numbers, dimensions, counts, value ranges and decompressed sizes are all checked.
//
// digits: each 8x8 image (0..16) is resized bilinearly (half-pixel centres, edges clamped) to
// 20x20, scaled to 0..255 and centred in a 28x28 frame with a 4-pixel border, the way MNIST
// centres its 20x20 digits, so that the same cnn28 and mlp-i784 models fit both datasets.
#include "ubcp/common/datasets.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ubcp/common/crypto.h"

namespace ubcp::common {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kSide = 28;
constexpr std::int64_t kPixels = kSide * kSide;
constexpr std::int64_t kMaxImages = 100'000;  // per IDX file
constexpr std::size_t kMaxCsvBytes = std::size_t{16} << 20;
constexpr std::int64_t kMaxCsvRows = 100'000;
constexpr std::uintmax_t kMaxCacheBytes = std::uintmax_t{256} << 20;
constexpr std::size_t kMaxCacheRaw = std::size_t{256} << 20;
constexpr char kFashionPackage[] = "dataset-fashion-mnist";
constexpr char kSklearnHint[] =
    "the Debian package python3-sklearn ships it under sklearn/datasets/data; "
    "scripts/install-deps copies it into /var/cache/ubcp/sklearn";

Error NotFound(const fs::path& file, std::string_view hint) {
  return MakeError(Errc::kNotFound, file.string() + " not found; " + std::string(hint));
}

// RAII owner of a zlib file handle. gzopen reads uncompressed files transparently too.
class GzFile {
 public:
  explicit GzFile(const fs::path& path) : f_(gzopen(path.c_str(), "rb")) {
    if (f_ != nullptr) gzbuffer(f_, 1 << 17);
  }
  ~GzFile() {
    if (f_ != nullptr) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  bool ok() const { return f_ != nullptr; }

  // Reads up to `n` bytes; returns the count read, or -1 on a decompression error.
  std::int64_t Read(std::uint8_t* out, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(f_, out + done, chunk);
      if (got < 0) return -1;
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    return static_cast<std::int64_t>(done);
  }

 private:
  gzFile f_;
};

Result<GzFile*> OpenGz(GzFile& file, const fs::path& path, std::string_view hint) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return NotFound(path, hint);
  if (!file.ok()) return MakeError(Errc::kIo, "cannot open " + path.string());
  return &file;
}

// Reads exactly `n` bytes and then requires the end of the stream.
Status ReadExact(GzFile& f, std::uint8_t* out, std::size_t n, const fs::path& path) {
  const std::int64_t got = f.Read(out, n);
  if (got < 0) return MakeError(Errc::kMalformed, path.string() + ": corrupt gzip stream");
  if (static_cast<std::size_t>(got) != n) {
    return MakeError(Errc::kMalformed, path.string() + ": truncated");
  }
  return {};
}

Status ExpectEnd(GzFile& f, const fs::path& path) {
  std::uint8_t extra = 0;
  const std::int64_t got = f.Read(&extra, 1);
  if (got < 0) return MakeError(Errc::kMalformed, path.string() + ": corrupt gzip stream");
  if (got != 0) return MakeError(Errc::kMalformed, path.string() + ": trailing data");
  return {};
}

std::uint32_t BigEndian32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// IDX3 images: magic 0x00000803, count, 28, 28, then count*784 bytes.
Result<NamedTensor> ReadIdxImages(const fs::path& path, std::string name) {
  GzFile file(path);
  UBCP_ASSIGN_OR_RETURN(GzFile * f, OpenGz(file, path, kFashionPackage));
  std::uint8_t header[16];
  UBCP_RETURN_IF_ERROR(ReadExact(*f, header, sizeof header, path));
  if (BigEndian32(header) != 0x00000803) {
    return MakeError(Errc::kMalformed, path.string() + ": not an IDX3 ubyte image file");
  }
  const std::int64_t count = BigEndian32(header + 4);
  if (BigEndian32(header + 8) != kSide || BigEndian32(header + 12) != kSide) {
    return MakeError(Errc::kMalformed, path.string() + ": images are not 28x28");
  }
  if (count < 1 || count > kMaxImages) {
    return MakeError(Errc::kMalformed, path.string() + ": image count out of range");
  }
  NamedTensor t;
  t.name = std::move(name);
  t.kind = TensorKind::kU8;
  t.shape = {count, 1, kSide, kSide};
  t.u8.resize(static_cast<std::size_t>(count * kPixels));
  UBCP_RETURN_IF_ERROR(ReadExact(*f, t.u8.data(), t.u8.size(), path));
  UBCP_RETURN_IF_ERROR(ExpectEnd(*f, path));
  return t;
}

// IDX1 labels: magic 0x00000801, count, then count bytes < 10.
Result<NamedTensor> ReadIdxLabels(const fs::path& path, std::string name) {
  GzFile file(path);
  UBCP_ASSIGN_OR_RETURN(GzFile * f, OpenGz(file, path, kFashionPackage));
  std::uint8_t header[8];
  UBCP_RETURN_IF_ERROR(ReadExact(*f, header, sizeof header, path));
  if (BigEndian32(header) != 0x00000801) {
    return MakeError(Errc::kMalformed, path.string() + ": not an IDX1 ubyte label file");
  }
  const std::int64_t count = BigEndian32(header + 4);
  if (count < 1 || count > kMaxImages) {
    return MakeError(Errc::kMalformed, path.string() + ": label count out of range");
  }
  NamedTensor t;
  t.name = std::move(name);
  t.kind = TensorKind::kU8;
  t.shape = {count};
  t.u8.resize(static_cast<std::size_t>(count));
  UBCP_RETURN_IF_ERROR(ReadExact(*f, t.u8.data(), t.u8.size(), path));
  UBCP_RETURN_IF_ERROR(ExpectEnd(*f, path));
  for (std::uint8_t label : t.u8) {
    if (label >= 10) return MakeError(Errc::kMalformed, path.string() + ": label >= 10");
  }
  return t;
}

Result<Dataset> LoadFashionMnist(const DatasetPaths& paths) {
  const fs::path& dir = paths.fashion_mnist_dir;
  Dataset d;
  d.name = "fashion-mnist";
  d.classes = 10;
  UBCP_ASSIGN_OR_RETURN(d.x, ReadIdxImages(dir / "train-images-idx3-ubyte.gz", "x"));
  UBCP_ASSIGN_OR_RETURN(d.y, ReadIdxLabels(dir / "train-labels-idx1-ubyte.gz", "y"));
  UBCP_ASSIGN_OR_RETURN(d.test_x, ReadIdxImages(dir / "t10k-images-idx3-ubyte.gz", "test_x"));
  UBCP_ASSIGN_OR_RETURN(d.test_y, ReadIdxLabels(dir / "t10k-labels-idx1-ubyte.gz", "test_y"));
  if (d.x.shape[0] != d.y.shape[0] || d.test_x.shape[0] != d.test_y.shape[0]) {
    return MakeError(Errc::kMalformed, "fashion-mnist: image and label counts differ");
  }
  return d;
}

Result<std::string> ReadText(const fs::path& path, std::string_view hint) {
  GzFile file(path);
  UBCP_ASSIGN_OR_RETURN(GzFile * f, OpenGz(file, path, hint));
  std::string text(kMaxCsvBytes + 1, '\0');
  const std::int64_t got = f->Read(reinterpret_cast<std::uint8_t*>(text.data()), text.size());
  if (got < 0) return MakeError(Errc::kMalformed, path.string() + ": corrupt gzip stream");
  if (static_cast<std::size_t>(got) > kMaxCsvBytes) {
    return MakeError(Errc::kTooLarge, path.string() + ": larger than the limit");
  }
  text.resize(static_cast<std::size_t>(got));
  return text;
}

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

std::vector<std::string_view> SplitCommas(std::string_view line) {
  std::vector<std::string_view> fields;
  while (true) {
    std::size_t comma = line.find(',');
    fields.push_back(line.substr(0, comma));
    if (comma == std::string_view::npos) break;
    line.remove_prefix(comma + 1);
  }
  return fields;
}

template <class T>
bool ParseNumber(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// Bilinear resize of one 8x8 image (0..16) into the centre 20x20 of a 28x28 u8 frame.
void UpsampleDigit(const int (&src)[64], std::uint8_t* dst) {
  constexpr int kIn = 8, kOut = 20, kBorder = 4;
  for (int oy = 0; oy < kOut; ++oy) {
    const double sy = std::clamp((oy + 0.5) * kIn / kOut - 0.5, 0.0, kIn - 1.0);
    const int y0 = static_cast<int>(sy), y1 = std::min(y0 + 1, kIn - 1);
    const double fy = sy - y0;
    for (int ox = 0; ox < kOut; ++ox) {
      const double sx = std::clamp((ox + 0.5) * kIn / kOut - 0.5, 0.0, kIn - 1.0);
      const int x0 = static_cast<int>(sx), x1 = std::min(x0 + 1, kIn - 1);
      const double fx = sx - x0;
      const double top = src[y0 * kIn + x0] * (1 - fx) + src[y0 * kIn + x1] * fx;
      const double bottom = src[y1 * kIn + x0] * (1 - fx) + src[y1 * kIn + x1] * fx;
      const double v = (top * (1 - fy) + bottom * fy) * 255.0 / 16.0;
      dst[(oy + kBorder) * kSide + ox + kBorder] =
          static_cast<std::uint8_t>(std::clamp(std::lround(v), 0L, 255L));
    }
  }
}

Result<Dataset> LoadDigits(const DatasetPaths& paths) {
  const fs::path path = paths.sklearn_data_dir / "digits.csv.gz";
  UBCP_ASSIGN_OR_RETURN(std::string text, ReadText(path, kSklearnHint));
  std::vector<std::string_view> lines = SplitLines(text);
  const std::int64_t rows = static_cast<std::int64_t>(lines.size());
  if (rows < 1 || rows > kMaxCsvRows) {
    return MakeError(Errc::kMalformed, path.string() + ": row count out of range");
  }
  Dataset d;
  d.name = "digits";
  d.classes = 10;
  d.x = NamedTensor{"x", TensorKind::kU8, {rows, 1, kSide, kSide}, {}, {}};
  d.x.u8.assign(static_cast<std::size_t>(rows * kPixels), 0);
  d.y = NamedTensor{"y", TensorKind::kU8, {rows}, {}, {}};
  d.y.u8.resize(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::string where = path.string() + " row " + std::to_string(r + 1);
    std::vector<std::string_view> fields = SplitCommas(lines[r]);
    if (fields.size() != 65) return MakeError(Errc::kMalformed, where + ": expected 65 fields");
    int pixels[64];
    for (int i = 0; i < 64; ++i) {
      if (!ParseNumber(fields[i], pixels[i]) || pixels[i] < 0 || pixels[i] > 16) {
        return MakeError(Errc::kMalformed, where + ": pixel not an integer 0..16");
      }
    }
    int label = 0;
    if (!ParseNumber(fields[64], label) || label < 0 || label >= 10) {
      return MakeError(Errc::kMalformed, where + ": label not an integer 0..9");
    }
    UpsampleDigit(pixels, d.x.u8.data() + r * kPixels);
    d.y.u8[r] = static_cast<std::uint8_t>(label);
  }
  return d;
}

// Header "<rows>,<features>,<class name>...", then rows of features and an integer label.
Result<Dataset> LoadBreastCancer(const DatasetPaths& paths) {
  const fs::path path = paths.sklearn_data_dir / "breast_cancer.csv";
  UBCP_ASSIGN_OR_RETURN(std::string text, ReadText(path, kSklearnHint));
  std::vector<std::string_view> lines = SplitLines(text);
  if (lines.empty()) return MakeError(Errc::kMalformed, path.string() + ": empty");
  std::vector<std::string_view> header = SplitCommas(lines[0]);
  std::int64_t rows = 0, features = 0;
  if (header.size() != 4 || !ParseNumber(header[0], rows) || !ParseNumber(header[1], features) ||
      features != 30 || rows < 1 || rows > kMaxCsvRows) {
    return MakeError(Errc::kMalformed, path.string() + ": bad header");
  }
  if (static_cast<std::int64_t>(lines.size()) != rows + 1) {
    return MakeError(Errc::kMalformed, path.string() + ": row count differs from the header");
  }
  std::vector<double> values(static_cast<std::size_t>(rows * features));
  Dataset d;
  d.name = "breast-cancer";
  d.classes = 2;
  d.y = NamedTensor{"y", TensorKind::kU8, {rows}, {}, {}};
  d.y.u8.resize(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::string where = path.string() + " row " + std::to_string(r + 1);
    std::vector<std::string_view> fields = SplitCommas(lines[r + 1]);
    if (static_cast<std::int64_t>(fields.size()) != features + 1) {
      return MakeError(Errc::kMalformed, where + ": wrong field count");
    }
    for (std::int64_t i = 0; i < features; ++i) {
      double& v = values[r * features + i];
      if (!ParseNumber(fields[i], v) || !std::isfinite(v) || std::fabs(v) > 1e12) {
        return MakeError(Errc::kMalformed, where + ": feature not a finite number");
      }
    }
    int label = 0;
    if (!ParseNumber(fields[features], label) || label < 0 || label > 1) {
      return MakeError(Errc::kMalformed, where + ": label not 0 or 1");
    }
    d.y.u8[r] = static_cast<std::uint8_t>(label);
  }
  // Standardise each feature over the whole set (population variance, as sklearn's
  // StandardScaler); a constant feature becomes zero.
  d.x = NamedTensor{"x", TensorKind::kF32, {rows, features}, {}, {}};
  d.x.f32.resize(values.size());
  for (std::int64_t i = 0; i < features; ++i) {
    double sum = 0, sq = 0;
    for (std::int64_t r = 0; r < rows; ++r) sum += values[r * features + i];
    const double mean = sum / static_cast<double>(rows);
    for (std::int64_t r = 0; r < rows; ++r) {
      const double c = values[r * features + i] - mean;
      sq += c * c;
    }
    double sd = std::sqrt(sq / static_cast<double>(rows));
    if (!(sd > 1e-12)) sd = 1.0;
    for (std::int64_t r = 0; r < rows; ++r) {
      d.x.f32[r * features + i] = static_cast<float>((values[r * features + i] - mean) / sd);
    }
  }
  return d;
}

Result<Dataset> LoadFromSource(std::string_view name, const DatasetPaths& paths) {
  if (name == "fashion-mnist") return LoadFashionMnist(paths);
  if (name == "digits") return LoadDigits(paths);
  if (name == "breast-cancer") return LoadBreastCancer(paths);
  return MakeError(Errc::kInvalidArgument,
                   "unknown dataset '" + std::string(name.substr(0, 64)) + "'");
}

// Expected per-sample shape and kind, and the class count, of each known dataset.
struct Expected {
  TensorKind kind;
  std::vector<std::int64_t> sample_shape;
  int classes;
  bool has_test;
};

Expected ExpectedFor(std::string_view name) {
  if (name == "breast-cancer") return {TensorKind::kF32, {30}, 2, false};
  return {TensorKind::kU8, {1, kSide, kSide}, 10, name == "fashion-mnist"};
}

bool ValidPair(const NamedTensor& x, const NamedTensor& y, const Expected& e) {
  if (y.kind != TensorKind::kU8 || y.shape.size() != 1 || y.shape[0] < 1) return false;
  std::vector<std::int64_t> shape = {y.shape[0]};
  shape.insert(shape.end(), e.sample_shape.begin(), e.sample_shape.end());
  if (x.kind != e.kind || x.shape != shape) return false;
  for (std::uint8_t label : y.u8) {
    if (label >= e.classes) return false;
  }
  return true;
}

// Cache file: the content id (64 hex) of the tensor blob that follows it.
constexpr std::size_t kCacheIdSize = 64;

fs::path CachePath(const DatasetPaths& paths, std::string_view name) {
  return paths.cache_dir / (std::string(name) + ".v2.ubt");
}

// The cache is only an accelerator: anything unreadable or inconsistent is ignored and the
// dataset is rebuilt from the package files.
std::optional<Dataset> ReadCache(const fs::path& path, std::string_view name) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec || size <= kCacheIdSize || size > kMaxCacheBytes) return std::nullopt;
  Bytes file(static_cast<std::size_t>(size));
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(file.data()), static_cast<std::streamsize>(size))) {
    return std::nullopt;
  }
  // The blob's zstd frame has no checksum and raw u8 pixels decode whatever their value: without
  // the hash a flipped bit would silently become a different training set.
  const ByteSpan blob = ByteSpan(file).subspan(kCacheIdSize);
  if (AsString(ByteSpan(file).first(kCacheIdSize)) != ContentId(blob)) return std::nullopt;
  TensorLimits limits;
  limits.max_tensors = 4;
  limits.max_elements = std::int64_t{1} << 27;
  Result<TensorList> list = DecodeTensorBlob(blob, kMaxCacheRaw, limits);
  if (!list) return std::nullopt;
  const Expected e = ExpectedFor(name);
  const NamedTensor* x = FindTensor(*list, "x");
  const NamedTensor* y = FindTensor(*list, "y");
  const NamedTensor* tx = FindTensor(*list, "test_x");
  const NamedTensor* ty = FindTensor(*list, "test_y");
  if (x == nullptr || y == nullptr || !ValidPair(*x, *y, e)) return std::nullopt;
  if (e.has_test != (tx != nullptr && ty != nullptr) || list->size() != (e.has_test ? 4u : 2u)) {
    return std::nullopt;
  }
  if (e.has_test && !ValidPair(*tx, *ty, e)) return std::nullopt;
  Dataset d;
  d.name = std::string(name);
  d.classes = e.classes;
  d.x = *x;
  d.y = *y;
  if (e.has_test) {
    d.test_x = *tx;
    d.test_y = *ty;
  }
  return d;
}

// Written to a unique temporary name and renamed, so that concurrent loaders never see a
// partial file.
void WriteCache(const fs::path& path, const Dataset& d) {
  static std::atomic<unsigned> counter{0};
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return;
  TensorList list = {d.x, d.y};
  if (!d.test_y.shape.empty()) {
    list.push_back(d.test_x);
    list.push_back(d.test_y);
  }
  const Bytes blob = EncodeTensorBlob(list, FloatEncoding::kFp32).bytes;
  const std::string id = ContentId(blob);
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(id.data(), static_cast<std::streamsize>(id.size()));
    out.write(reinterpret_cast<const char*>(blob.data()),
              static_cast<std::streamsize>(blob.size()));
    out.close();
    if (!out) {
      fs::remove(tmp, ec);
      return;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp, ec);
}

std::uint64_t UniformBelow(std::mt19937_64& rng, std::uint64_t bound) {
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
  std::uint64_t r;
  do {
    r = rng();
  } while (r >= limit);
  return r % bound;
}

}  // namespace

std::vector<std::string> KnownDatasets() { return {"fashion-mnist", "digits", "breast-cancer"}; }

Result<Dataset> LoadDataset(std::string_view name, const DatasetPaths& paths) {
  const std::vector<std::string> known = KnownDatasets();
  if (std::find(known.begin(), known.end(), name) == known.end()) {
    return MakeError(Errc::kInvalidArgument,
                     "unknown dataset '" + std::string(name.substr(0, 64)) + "'");
  }
  if (!paths.cache_dir.empty()) {
    if (std::optional<Dataset> cached = ReadCache(CachePath(paths, name), name)) {
      return std::move(*cached);
    }
  }
  UBCP_ASSIGN_OR_RETURN(Dataset d, LoadFromSource(name, paths));
  if (!paths.cache_dir.empty()) WriteCache(CachePath(paths, name), d);
  return d;
}

TensorList TakeRows(const NamedTensor& x, const NamedTensor& y,
                    const std::vector<std::int64_t>& indices) {
  if (y.shape.size() != 1 || x.shape.empty() || x.shape[0] != y.shape[0] ||
      static_cast<std::int64_t>(y.u8.size()) != y.shape[0] || y.shape[0] <= 0) {
    return {};
  }
  const std::int64_t rows = y.shape[0];
  const bool u8 = x.kind == TensorKind::kU8;
  const std::size_t stored = u8 ? x.u8.size() : x.f32.size();
  std::size_t row_size = 1;
  for (std::size_t i = 1; i < x.shape.size(); ++i) {
    if (x.shape[i] <= 0) return {};
    row_size *= static_cast<std::size_t>(x.shape[i]);
  }
  if (stored / static_cast<std::size_t>(rows) != row_size ||
      stored % static_cast<std::size_t>(rows) != 0) {
    return {};
  }

  NamedTensor out_x{"x", x.kind, x.shape, {}, {}};
  NamedTensor out_y{"y", TensorKind::kU8, {0}, {}, {}};
  for (std::int64_t i : indices) {
    if (i < 0 || i >= rows) continue;
    const std::size_t at = static_cast<std::size_t>(i) * row_size;
    if (u8) {
      out_x.u8.insert(out_x.u8.end(), x.u8.begin() + at, x.u8.begin() + at + row_size);
    } else {
      out_x.f32.insert(out_x.f32.end(), x.f32.begin() + at, x.f32.begin() + at + row_size);
    }
    out_y.u8.push_back(y.u8[static_cast<std::size_t>(i)]);
  }
  const std::int64_t taken = static_cast<std::int64_t>(out_y.u8.size());
  out_x.shape[0] = taken;
  out_y.shape[0] = taken;
  return {std::move(out_x), std::move(out_y)};
}

Split SplitIndices(std::int64_t n, double test_fraction, std::uint64_t seed) {
  Split split;
  if (n <= 0) return split;
  const double fraction = std::isfinite(test_fraction) ? std::clamp(test_fraction, 0.0, 1.0) : 0;
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[i] = i;
  // Own Fisher-Yates over mt19937_64 (std::shuffle's algorithm is implementation-defined), so
  // that a split is the same on every platform.
  std::mt19937_64 rng(seed);
  for (std::size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[UniformBelow(rng, i)]);
  const auto test_count = static_cast<std::size_t>(std::llround(fraction * static_cast<double>(n)));
  split.test.assign(order.begin(), order.begin() + test_count);
  split.train.assign(order.begin() + test_count, order.end());
  return split;
}

std::vector<std::vector<std::int64_t>> Partition(const std::vector<std::int64_t>& indices,
                                                 int parts) {
  std::vector<std::vector<std::int64_t>> out;
  if (parts <= 0) return out;
  out.resize(static_cast<std::size_t>(parts));
  const std::size_t base = indices.size() / parts, extra = indices.size() % parts;
  std::size_t at = 0;
  for (std::size_t p = 0; p < out.size(); ++p) {
    const std::size_t len = base + (p < extra ? 1 : 0);
    out[p].assign(indices.begin() + at, indices.begin() + at + len);
    at += len;
  }
  return out;
}

}  // namespace ubcp::common

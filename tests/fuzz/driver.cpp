// driver.cpp: the fuzzing loop of the sanitizer build (g++ has no libFuzzer). Each
// fuzz target defines LLVMFuzzerTestOneInput (the libFuzzer entry point, so a clang
// build could link the same targets with -fsanitize=fuzzer); this main feeds it:
//   1. every seed file given (files, or folders of files) once, in name order;
//   2. then mutants of the corpus until --seconds or --runs is reached. A mutant is
//      1-8 stacked edits of a corpus entry: bit flips, random bytes, inserted or
//      deleted or duplicated ranges, splices with another entry, tokens taken from
//      the seeds (JSON strings, keys, punctuation), numbers replaced by edge values
//      (0, -1, 2^31, 2^63, 1e309, ...), and 8-byte little-endian integers overwritten
//      with edge values (binary headers). A mutant that reaches a new edge of the
//      parsers' coverage map (coverage.h), or a known edge a new number of times
//      (hit-count buckets), joins the corpus.
// The seeded PRNG makes a run with --runs reproducible; --seconds bounds it for CI.
// Findings: a sanitizer report (a death callback or SIGABRT handler saves the input), an exception
// the target let through (anything but a clean rejection), or an input running over
// --timeout seconds. Each saves the input as ARTIFACTS/<target>-<kind>-<hash> and
// exits 1, printing how to replay it (pass the file as the only seed with --runs 0).
#include <sanitizer/common_interface_defs.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <typeinfo>
#include <vector>

#include "tests/fuzz/coverage.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

struct Options {
  double seconds = 60;
  long runs = -1;  // -1: until --seconds
  uint64_t seed = 1;
  size_t max_len = 64 * 1024;
  unsigned timeout_s = 10;
  std::string artifacts = ".";
  std::string name = "fuzz";
  std::vector<std::string> inputs;
};

// The input being run, kept where the death callback and the alarm handler can save it.
const uint8_t* g_cur = nullptr;
size_t g_cur_size = 0;
char g_artifact_prefix[4096];

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Async-signal-safe: open/write/close only, the name built without snprintf.
void save_current(const char* kind) {
  char path[4300];
  size_t len = 0;
  auto put = [&](const char* s) {
    while (*s && len + 1 < sizeof path) path[len++] = *s++;
  };
  put(g_artifact_prefix);
  put("-");
  put(kind);
  put("-");
  uint64_t h = fnv1a(g_cur, g_cur_size);
  for (int i = 15; i >= 0; --i) path[len++] = "0123456789abcdef"[(h >> (4 * i)) & 15];
  path[len] = 0;
  int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t off = 0;
    while (off < g_cur_size) {
      ssize_t w = ::write(fd, g_cur + off, g_cur_size - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    ::close(fd);
  }
  const char* msg = "\n== fuzz: input saved as ";
  ssize_t ignored = ::write(2, msg, std::strlen(msg));
  ignored = ::write(2, path, len);
  ignored = ::write(2, "\n", 1);
  (void)ignored;
}

void on_death() { save_current("crash"); }

// UBSan does not call the death callback: with abort_on_error=1 (the defaults below, and
// scripts/fuzz.sh) every sanitizer report ends in abort(), which lands here.
void on_abort(int) {
  save_current("crash");
  signal(SIGABRT, SIG_DFL);
  raise(SIGABRT);
}

void on_alarm(int) {
  const char* msg = "\n== fuzz: an input ran past the --timeout (a hang)\n";
  ssize_t ignored = ::write(2, msg, std::strlen(msg));
  (void)ignored;
  save_current("timeout");
  _exit(1);
}

}  // namespace

// Defaults for a run started by hand; $ASAN_OPTIONS / $UBSAN_OPTIONS override them.
extern "C" const char* __asan_default_options() { return "abort_on_error=1:print_stacktrace=1"; }
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:abort_on_error=1:print_stacktrace=1"; }

namespace {

[[noreturn]] void usage(const char* argv0, const std::string& why) {
  std::fprintf(stderr,
               "%s: %s\nusage: %s [--seconds S] [--runs N] [--seed K] [--max-len BYTES] [--timeout S]\n"
               "       [--artifacts DIR] SEED_FILE_OR_DIR...\n"
               "  Runs every seed once, then mutants until S seconds (default 60) or N mutants.\n"
               "  --runs 0 only replays the seeds (a saved finding, a regression corpus).\n",
               argv0, why.c_str(), argv0);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  o.name = fs::path(argv[0]).filename().string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0], a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--seconds") o.seconds = std::stod(value());
      else if (a == "--runs") o.runs = std::stol(value());
      else if (a == "--seed") o.seed = std::stoull(value());
      else if (a == "--max-len") o.max_len = std::stoull(value());
      else if (a == "--timeout") o.timeout_s = static_cast<unsigned>(std::stoul(value()));
      else if (a == "--artifacts") o.artifacts = value();
      else if (a.rfind("--", 0) == 0) usage(argv[0], "unknown option " + a);
      else o.inputs.push_back(a);
    } catch (const std::logic_error&) {
      usage(argv[0], "bad value for " + a);
    }
  }
  if (o.inputs.empty()) usage(argv[0], "no seed files or folders given");
  if (!(o.seconds > 0) || o.max_len == 0 || o.timeout_s == 0) usage(argv[0], "--seconds, --max-len and --timeout must be positive");
  return o;
}

Bytes read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

std::vector<std::pair<std::string, Bytes>> load_seeds(const Options& o) {
  std::vector<std::pair<std::string, Bytes>> seeds;
  for (auto& in : o.inputs) {
    std::vector<fs::path> files;
    if (fs::is_directory(in)) {
      for (auto& e : fs::directory_iterator(in))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
    } else if (fs::is_regular_file(in)) {
      files.push_back(in);
    } else {
      std::fprintf(stderr, "%s: seed %s is neither a file nor a folder\n", o.name.c_str(), in.c_str());
      std::exit(2);
    }
    for (auto& f : files) seeds.emplace_back(f.string(), read_bytes(f));
  }
  return seeds;
}

// Tokens for insertion: JSON punctuation and literals, plus every "quoted string" of the seeds.
std::vector<std::string> dictionary(const std::vector<std::pair<std::string, Bytes>>& seeds) {
  std::set<std::string> d = {"{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "{}", "[]", "\"\"",
                             "\\u0000", "\\ud800", "\\", "\xff", "\xc3\xa9", "\xe2\x96\x81", "-", ".", "e", "E+"};
  for (auto& [name, b] : seeds) {
    for (size_t i = 0; i < b.size(); ++i) {
      if (b[i] != '"') continue;
      size_t j = i + 1;
      while (j < b.size() && b[j] != '"' && b[j] != '\n' && j - i < 64) j += b[j] == '\\' ? 2 : 1;
      if (j < b.size() && b[j] == '"') d.insert(std::string(b.begin() + i, b.begin() + j + 1));
      i = j;
    }
  }
  return {d.begin(), d.end()};
}

const char* const kNumbers[] = {"0", "-1", "1", "2", "3", "7", "8", "-0", "0.5", "1e-45", "65535", "65536",
                                "2147483647", "2147483648", "-2147483648", "4294967296", "9007199254740993",
                                "9223372036854775807", "9223372036854775808", "-9223372036854775809",
                                "18446744073709551615", "18446744073709551616", "1e308", "1e309", "-1e309",
                                "3.4e38", "1.5", "100000", "1000000000", "NaN", "Infinity"};
const uint64_t kIntegers[] = {0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000ull,
                              0xffffffffull, 0x100000000ull, 0x7fffffffffffffffull, 0x8000000000000000ull,
                              ~0ull, ~0ull - 7, 100u << 20, (100u << 20) + 1};

class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len, std::vector<std::string> dict)
      : rng_(seed), max_len_(max_len), dict_(std::move(dict)) {}

  Bytes mutate(const Bytes& base, const std::vector<Bytes>& corpus) {
    Bytes b = base;
    int edits = 1 + static_cast<int>(below(8));
    for (int e = 0; e < edits; ++e) edit(b, corpus);
    if (b.size() > max_len_) b.resize(max_len_);
    return b;
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

 private:
  void insert(Bytes& b, size_t at, const uint8_t* p, size_t n) { b.insert(b.begin() + at, p, p + n); }
  void edit(Bytes& b, const std::vector<Bytes>& corpus) {
    const size_t n = b.size();
    switch (below(10)) {
      case 0:  // flip a bit
        if (n) b[below(n)] ^= static_cast<uint8_t>(1u << below(8));
        break;
      case 1:  // random byte
        if (n) b[below(n)] = static_cast<uint8_t>(rng_());
        break;
      case 2: {  // insert a few random bytes
        size_t k = 1 + below(4), at = below(n + 1);
        for (size_t i = 0; i < k; ++i) {
          uint8_t c = static_cast<uint8_t>(rng_());
          insert(b, at, &c, 1);
        }
        break;
      }
      case 3: {  // delete a range
        if (!n) break;
        size_t at = below(n), k = 1 + below(std::min<size_t>(n - at, 16));
        b.erase(b.begin() + at, b.begin() + at + k);
        break;
      }
      case 4: {  // duplicate a range somewhere
        if (!n) break;
        size_t from = below(n), k = 1 + below(std::min<size_t>(n - from, 64)), at = below(n + 1);
        Bytes piece(b.begin() + from, b.begin() + from + k);
        insert(b, at, piece.data(), piece.size());
        break;
      }
      case 5: {  // splice: our prefix, another entry's suffix
        const Bytes& o = corpus[below(corpus.size())];
        if (o.empty()) break;
        size_t cut = below(n + 1), ocut = below(o.size());
        b.resize(cut);
        b.insert(b.end(), o.begin() + ocut, o.end());
        break;
      }
      case 6:
      case 7: {  // dictionary token
        const std::string& t = dict_[below(dict_.size())];
        size_t at = below(n + 1);
        if (at < n && below(2)) b.erase(b.begin() + at, b.begin() + at + std::min(n - at, t.size()));  // replace
        insert(b, at, reinterpret_cast<const uint8_t*>(t.data()), t.size());
        break;
      }
      case 8: {  // replace a number with an edge value
        std::vector<std::pair<size_t, size_t>> nums;  // [begin, end) of digit runs
        for (size_t i = 0; i < n; ++i) {
          if (!std::isdigit(b[i])) continue;
          size_t j = i;
          while (j < n && (std::isdigit(b[j]) || b[j] == '.' || b[j] == 'e' || b[j] == 'E')) ++j;
          size_t s = i > 0 && b[i - 1] == '-' ? i - 1 : i;
          nums.push_back({s, j});
          i = j;
        }
        const char* v = kNumbers[below(std::size(kNumbers))];
        if (nums.empty()) {
          insert(b, below(n + 1), reinterpret_cast<const uint8_t*>(v), std::strlen(v));
          break;
        }
        auto [s, e] = nums[below(nums.size())];
        b.erase(b.begin() + s, b.begin() + e);
        insert(b, s, reinterpret_cast<const uint8_t*>(v), std::strlen(v));
        break;
      }
      case 9: {  // overwrite a little-endian integer (the safetensors header length is the first 8 bytes)
        uint64_t v = kIntegers[below(std::size(kIntegers))];
        if (below(2)) v += below(3) - 1;
        size_t width = size_t{1} << below(4), at = below(2) ? 0 : below(n + 1);
        if (at + width > n) break;
        std::memcpy(&b[at], &v, width);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  size_t max_len_;
  std::vector<std::string> dict_;
};

// Feature bits of a run: (edge slot, AFL-style hit-count bucket).
int bucket(uint8_t c) {
  if (c <= 3) return c - 1;
  if (c <= 7) return 3;
  if (c <= 15) return 4;
  if (c <= 31) return 5;
  if (c <= 127) return 6;
  return 7;
}

class Coverage {
 public:
  // Merges the map of the last run into the seen set; true when it adds a feature.
  bool merge() {
    const uint8_t* m = moebench::fuzz::coverage_map();
    bool added = false;
    for (size_t i = 0; i < moebench::fuzz::kCoverageMapSize; ++i) {
      if (!m[i]) continue;
      uint8_t bit = static_cast<uint8_t>(1u << bucket(m[i]));
      if (!(seen_[i] & bit)) {
        if (!seen_[i]) ++edges_;
        seen_[i] |= bit;
        added = true;
      }
    }
    return added;
  }
  size_t edges() const { return edges_; }

 private:
  std::vector<uint8_t> seen_ = std::vector<uint8_t>(moebench::fuzz::kCoverageMapSize, 0);
  size_t edges_ = 0;
};

// Runs one input from an exactly-sized heap copy, so over-reads hit ASan's redzone.
void run_one(const Options& o, const Bytes& in) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[in.size() ? in.size() : 1]);
  if (!in.empty()) std::memcpy(copy.get(), in.data(), in.size());
  g_cur = copy.get();
  g_cur_size = in.size();
  moebench::fuzz::clear_coverage();
  alarm(o.timeout_s);
  try {
    LLVMFuzzerTestOneInput(copy.get(), in.size());
  } catch (const std::exception& e) {
    alarm(0);
    std::fprintf(stderr, "\n== fuzz: %s let an exception through: %s: %s\n", o.name.c_str(), typeid(e).name(), e.what());
    save_current("exception");
    std::exit(1);
  } catch (...) {
    alarm(0);
    std::fprintf(stderr, "\n== fuzz: %s let a non-std exception through\n", o.name.c_str());
    save_current("exception");
    std::exit(1);
  }
  alarm(0);
  g_cur = nullptr;
  g_cur_size = 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  fs::create_directories(o.artifacts);
  std::snprintf(g_artifact_prefix, sizeof g_artifact_prefix, "%s/%s", o.artifacts.c_str(), o.name.c_str());
  __sanitizer_set_death_callback(on_death);
  signal(SIGABRT, on_abort);
  signal(SIGALRM, on_alarm);

  auto seeds = load_seeds(o);
  if (seeds.empty()) {
    std::fprintf(stderr, "%s: no seed files found\n", o.name.c_str());
    return 2;
  }
  Coverage cov;
  std::vector<Bytes> corpus;
  for (auto& [name, bytes] : seeds) {
    run_one(o, bytes);
    cov.merge();
    corpus.push_back(bytes);
  }
  std::printf("%s: %zu seeds replayed, %zu edges\n", o.name.c_str(), seeds.size(), cov.edges());
  if (o.runs == 0) return 0;

  Mutator mut(o.seed, o.max_len, dictionary(seeds));
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_s = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  long runs = 0;
  double next_report_s = 10;
  while (o.runs < 0 ? elapsed_s() < o.seconds : runs < o.runs) {
    Bytes m = mut.mutate(corpus[mut.below(corpus.size())], corpus);
    run_one(o, m);
    ++runs;
    if (cov.merge()) corpus.push_back(std::move(m));
    if (elapsed_s() >= next_report_s) {
      std::printf("%s: %ld runs, corpus %zu, %zu edges, %.0f s\n", o.name.c_str(), runs, corpus.size(), cov.edges(),
                  elapsed_s());
      std::fflush(stdout);
      next_report_s += 10;
    }
  }
  std::printf("%s: done: %ld mutants in %.1f s (seed %llu), corpus %zu, %zu edges, no finding\n", o.name.c_str(), runs,
              elapsed_s(), static_cast<unsigned long long>(o.seed), corpus.size(), cov.edges());
  return 0;
}

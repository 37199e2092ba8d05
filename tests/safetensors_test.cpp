// safetensors_test.cpp: the checkpoint reader on good, sharded and broken files,
// including a randomised-corruption test (never a crash, always an Error), and
// checkpoint folders rewritten or left ambiguous.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common/error.h"
#include "engine/safetensors.h"
#include "engine/synth_checkpoint.h"
#include "engine/weight_source.h"
#include "engine/weights.h"
#include "test_util.h"

namespace safetensors_test {

using namespace moebench;
namespace fs = std::filesystem;

namespace {
// A small valid file with two tensors.
std::string make_file(const std::string& path) {
  std::vector<TensorToWrite> t = {
      {"a", DType::f32, {2, 3}, [](uint8_t* d, size_t n) { for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(i); }},
      {"b", DType::bf16, {4}, [](uint8_t* d, size_t n) { for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(7 * i); }},
  };
  write_safetensors(path, t);
  return test::read_file(path);
}

std::string header_json(const std::string& bytes) {
  uint64_t n = 0;
  memcpy(&n, bytes.data(), 8);
  return bytes.substr(8, n);
}

std::string with_header(const std::string& bytes, const std::string& new_header) {
  std::string data = bytes.substr(8 + header_json(bytes).size());
  uint64_t n = new_header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + new_header + data;
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Safetensors, ReadsWhatItWrites) {
  test::TempDir d;
  make_file(d.str("m.safetensors"));
  SafetensorsFile f(d.str("m.safetensors"));
  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorView* a = f.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->nbytes, 24u);
  EXPECT_EQ(a->data[5], 5);
  EXPECT_EQ(f.find("b")->dtype, DType::bf16);
  EXPECT_EQ(f.find("b")->data[3], 21);
}

TEST(Safetensors, TruncatedFileNamesFileAndTensor) {
  test::TempDir d;
  std::string bytes = make_file(d.str("m.safetensors"));
  test::write_file(d.str("t.safetensors"), bytes.substr(0, bytes.size() - 4));
  std::string e = error_of(d.str("t.safetensors"));
  EXPECT_NE(e.find("t.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("'b'"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  test::write_file(d.str("s.safetensors"), bytes.substr(0, 5));
  EXPECT_NE(error_of(d.str("s.safetensors")).find("truncated"), std::string::npos);
}

TEST(Safetensors, CorruptHeader) {
  test::TempDir d;
  std::string bytes = make_file(d.str("m.safetensors"));
  std::string h = header_json(bytes);
  test::write_file(d.str("c.safetensors"), with_header(bytes, "{\"a\": [1,"));
  EXPECT_NE(error_of(d.str("c.safetensors")).find("corrupt header"), std::string::npos);
  // Header length pointing past the end of the file.
  std::string big = bytes;
  uint64_t n = 1ULL << 40;
  memcpy(big.data(), &n, 8);
  test::write_file(d.str("l.safetensors"), big);
  EXPECT_NE(error_of(d.str("l.safetensors")).find("header length"), std::string::npos);
}

TEST(Safetensors, OverlappingAndWrongSizedRanges) {
  test::TempDir d;
  std::string bytes = make_file(d.str("m.safetensors"));
  auto j = nlohmann::json::parse(header_json(bytes));
  j["b"]["data_offsets"] = {16, 24};  // inside a's bytes
  test::write_file(d.str("o.safetensors"), with_header(bytes, j.dump()));
  EXPECT_NE(error_of(d.str("o.safetensors")).find("overlap"), std::string::npos);
  j = nlohmann::json::parse(header_json(bytes));
  j["a"]["shape"] = {2, 4};
  test::write_file(d.str("w.safetensors"), with_header(bytes, j.dump()));
  std::string e = error_of(d.str("w.safetensors"));
  EXPECT_NE(e.find("expected 32"), std::string::npos) << e;
  j = nlohmann::json::parse(header_json(bytes));
  j["a"]["dtype"] = "I64";
  test::write_file(d.str("i.safetensors"), with_header(bytes, j.dump()));
  EXPECT_NE(error_of(d.str("i.safetensors")).find("I64"), std::string::npos);
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  test::TempDir d;
  std::string bytes = make_file(d.str("m.safetensors"));
  std::mt19937 rng(7);
  int errors = 0, ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = bytes;
    int kind = iter % 3;
    if (kind == 0) {  // flip random bytes anywhere (header included)
      for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
    } else if (kind == 1) {  // truncate
      b.resize(rng() % b.size());
    } else {  // overwrite a byte of the header with a random printable char
      size_t hl = header_json(bytes).size();
      b[8 + rng() % hl] = static_cast<char>(32 + rng() % 95);
    }
    std::string p = d.str("f.safetensors");
    test::write_file(p, b);
    try {
      SafetensorsFile f(p);
      for (auto& [n, v] : f.tensors()) {  // whatever parsed must lie inside the file
        ASSERT_LE(v.file_offset + v.nbytes, f.file_size());
      }
      ++ok;
    } catch (const Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 1000);
  EXPECT_GT(ok, 0);  // flips inside the data section are legal
}

TEST(Checkpoint, ShardedSyntheticRoundTrip) {
  test::TempDir d;
  ModelConfig c = preset_config("micro");
  // A tiny shard limit forces several shards and the index file.
  auto info = write_synthetic_checkpoint(c, 5, DType::bf16, d.str(), 64 * 1024);
  EXPECT_GT(info.shards, 2);
  EXPECT_TRUE(fs::exists(d.str("model.safetensors.index.json")));
  auto w = WeightSource::checkpoint(d.str());
  auto syn = WeightSource::synthetic(c, 5, DType::bf16);
  for (auto& s : model_tensor_specs(c)) {
    std::vector<uint16_t> a(s.numel()), b(s.numel());
    w.read_bf16(s, a.data());
    syn.read_bf16(s, b.data());
    ASSERT_EQ(a, b) << s.name;
  }
}

TEST(Checkpoint, MissingTensorAndWrongShape) {
  test::TempDir d;
  ModelConfig c = preset_config("micro");
  write_synthetic_checkpoint(c, 1, DType::bf16, d.str());
  // Claim more experts than the file has: a missing tensor, named.
  auto j = nlohmann::json::parse(test::read_file(d.str("config.json")));
  j["num_local_experts"] = 5;
  test::write_file(d.str("config.json"), j.dump());
  try {
    WeightSource::checkpoint(d.str());
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("block_sparse_moe.gate.weight"), std::string::npos) << m;  // gate shape (5, H) != (4, H)
  }
  j["num_local_experts"] = 4;
  j["hidden_size"] = 32;
  j["head_dim"] = 8;
  test::write_file(d.str("config.json"), j.dump());
  try {
    WeightSource::checkpoint(d.str());
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("has shape [512, 64], expected [512, 32]"), std::string::npos) << m;
  }
}

TEST(Checkpoint, SyntheticIsDeterministicPerSeed) {
  ModelConfig c = preset_config("micro");
  auto a = WeightSource::synthetic(c, 1), b = WeightSource::synthetic(c, 1), x = WeightSource::synthetic(c, 2);
  TensorSpec s = tensor_spec(c, names::expert(1, 2, "w2"));
  std::vector<float> va(s.numel()), vb(s.numel()), vx(s.numel());
  a.read_f32(s, va.data());
  b.read_f32(s, vb.data());
  x.read_f32(s, vx.data());
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vx);
  // Values lie within the declared init range.
  for (float v : va) EXPECT_LE(std::fabs(v), s.init_scale * 1.01f);
}

TEST(Safetensors, ZeroLengthTensorDoesNotHideAnOverlap) {
  test::TempDir d;
  std::string bytes = make_file(d.str("m.safetensors"));
  auto j = nlohmann::json::parse(header_json(bytes));
  j["b"]["data_offsets"] = {16, 24};                                            // inside a's [0, 24]
  j["z"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 8}}};  // empty, sorts between them
  test::write_file(d.str("o.safetensors"), with_header(bytes, j.dump()));
  std::string e = error_of(d.str("o.safetensors"));
  EXPECT_NE(e.find("tensors 'a' [0, 24] and 'b' [16, 24] overlap"), std::string::npos) << e;
  j["b"]["data_offsets"] = {24, 32};  // adjacent, not overlapping: still fine with the empty one
  test::write_file(d.str("ok.safetensors"), with_header(bytes, j.dump()));
  EXPECT_EQ(error_of(d.str("ok.safetensors")), "");
}

// A FIFO (or any non-regular file) in place of a safetensors file is refused at once.
// Without that check, opening it waits for a writer: a helper thread plays the writer
// until the reader is done, so the test ends either way.
TEST(Safetensors, NonRegularFileIsRefused) {
  test::TempDir d;
  const std::string p = d.str("model.safetensors");
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    while (!done) {
      int fd = ::open(p.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::string e = error_of(p);
  done = true;
  writer.join();
  EXPECT_EQ(e, p + ": is not a regular file (a safetensors file is expected)");
}

TEST(Checkpoint, RewritingAFolderLeavesNoStaleShardOrIndex) {
  test::TempDir d;
  ModelConfig c = preset_config("micro");
  write_synthetic_checkpoint(c, 1, DType::bf16, d.str(), 64 * 1024);  // sharded, with an index
  ASSERT_TRUE(fs::exists(d.str("model.safetensors.index.json")));
  test::write_file(d.str("tokenizer.json"), "{}");
  write_synthetic_checkpoint(c, 2, DType::bf16, d.str());  // one file
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d.path)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json"}));
  // The loader reads the new weights (seed 2), not the old shards (seed 1).
  auto w = WeightSource::checkpoint(d.str());
  auto syn = WeightSource::synthetic(c, 2, DType::bf16);
  TensorSpec s = tensor_spec(c, names::expert(1, 2, "w2"));
  std::vector<uint16_t> a(s.numel()), b(s.numel());
  w.read_bf16(s, a.data());
  syn.read_bf16(s, b.data());
  EXPECT_EQ(a, b);
  // And back to shards: the single file goes.
  write_synthetic_checkpoint(c, 3, DType::bf16, d.str(), 64 * 1024);
  EXPECT_FALSE(fs::exists(d.str("model.safetensors")));
  EXPECT_NO_THROW(WeightSource::checkpoint(d.str()));
}

TEST(Checkpoint, FolderWithBothASingleFileAndAnIndexIsAmbiguous) {
  test::TempDir d, other;
  ModelConfig c = preset_config("micro");
  write_synthetic_checkpoint(c, 1, DType::bf16, d.str(), 64 * 1024);
  write_synthetic_checkpoint(c, 2, DType::bf16, other.str());
  fs::copy_file(other.str("model.safetensors"), d.str("model.safetensors"));
  try {
    WeightSource::checkpoint(d.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), d.str() + ": holds both model.safetensors and model.safetensors.index.json: "
                                               "which checkpoint is meant is ambiguous (remove the stale one)");
  }
}

TEST(Checkpoint, WeightsMoebenchDidNotWriteAreNeverReplaced) {
  test::TempDir d;
  const std::string bytes = make_file(d.str("model.safetensors"));  // not a moebench checkpoint
  try {
    write_synthetic_checkpoint(preset_config("micro"), 1, DType::bf16, d.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds model.safetensors, which moebench did not write"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(test::read_file(d.str("model.safetensors")), bytes);
}

}  // namespace safetensors_test

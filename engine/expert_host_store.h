// expert_host_store.h: the host-side tiers of one model's experts, in the format they
// run in (bf16, or quantised: engine/quant.h), for an offloading expert provider (engine/cuda/offload_provider.h). Plain C++, no CUDA:
// page-locked memory comes through a HostAllocator the CUDA side supplies
// (cuda::pinned_host_allocator(), cudaHostAlloc); without one, ordinary aligned memory.
//
//   pinned  every expert of every layer in host memory, one contiguous block per
//           expert laid out w1 | w3 | w2 (row-major as HF stores them: w1, w3 (inter,
//           hidden); w2 (hidden, inter)), each matrix its quant_parts() back to back
//           (engine/device_plan.h, ExpertLayout) — exactly a device slot's layout, so a
//           load is one host->device copy. Quantised formats are quantised here from
//           the source's values (WeightSource::read_quant: the bytes the CPU backend
//           computes with), or copied as stored. Filled from the WeightSource
//           (checkpoint mmap, or the synthetic generator) in chunks, allocated and
//           filled by parallel threads; a progress bar on stderr when it is a TTY;
//           the time taken is kept (pin_seconds()) and printed by describe().
//   disk    no copy in memory: every load reads the expert's three tensors from the
//           checkpoint's safetensors with pread into a caller's (pinned) staging
//           buffer. The read is real, not served by the page cache: files are opened
//           with O_DIRECT (an aligned superset of each tensor is read, the tensor is at
//           an offset inside it); where the filesystem refuses O_DIRECT (tmpfs, some
//           overlays) the store falls back to posix_fadvise(POSIX_FADV_DONTNEED) on the
//           range before each read. describe() says which one is in use. Needs a
//           checkpoint whose expert tensors are stored in the format asked for (bf16,
//           or every part of a quantised format; synthetic weights have no file).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/device_plan.h"
#include "engine/host_memory.h"
#include "engine/weight_source.h"

namespace moebench {

// Where the pinned tier's memory comes from. alloc must return memory aligned to at
// least 4096 bytes or throw; it may be called from several threads at once.
struct HostAllocator {
  std::string name = "aligned host memory";  // e.g. "cudaHostAlloc (page-locked)"
  std::function<void*(size_t bytes)> alloc;
  std::function<void(void*)> free;
  bool page_locked = false;
};
HostAllocator aligned_host_allocator();  // std::aligned_alloc(4096, ...), not page-locked

enum class HostTier { pinned, disk };
const char* host_tier_name(HostTier t);
// Parses "pinned" | "disk" (throws Error naming the value and the expected ones).
HostTier parse_host_tier(const std::string& s);

struct HostStoreOptions {
  int threads = 0;                       // fill threads; 0 = hardware concurrency (max 16)
  uint64_t chunk_bytes = 1ull << 30;     // target bytes per allocation (>= one expert)
  int progress = -1;                     // progress bar: 1 on, 0 off, -1 when stderr is a TTY
  bool allow_page_cache = false;         // disk: skip O_DIRECT / fadvise (tests of the plain path only)
  // Tensor parallel (pinned tier, bf16): the store holds rank tp_rank's slices of every
  // expert (engine/shard.h), shaped by that rank's config.
  int tp_rank = 0;
  int tp_world = 1;
  // Pinned tier: the host memory the store is checked against before it allocates
  // (host_memory.h: an Error when it can never fit); unset: this machine's.
  std::optional<HostMemory> host_memory;
};

// Where one expert's three tensors lie inside a staging buffer after read_expert().
struct StagedExpert {
  uint64_t w1 = 0, w3 = 0, w2 = 0;  // byte offsets into the staging buffer (each matrix's first part)
  uint64_t part[3][3] = {};         // [matrix][part] byte offsets (ExpertLayout's parts)
};

// How the disk tier made its reads real.
enum class DiskReadMode { direct, fadvise_dontneed, page_cache };
const char* disk_read_mode_name(DiskReadMode m);

class ExpertHostStore {
 public:
  // Pinned tier: allocates and fills every expert (throws Error when an allocation fails,
  // naming the bytes asked for and the total).
  // `format`: what the experts run in (resolve_expert_format()).
  static std::unique_ptr<ExpertHostStore> pinned(const WeightSource& ws, const HostAllocator& allocator,
                                                 const HostStoreOptions& opt = {},
                                                 QuantFormat format = QuantFormat::bf16);
  // Disk tier: opens the checkpoint's files; throws Error for synthetic weights or
  // expert tensors not stored in `format`.
  static std::unique_ptr<ExpertHostStore> disk(const WeightSource& ws, const HostStoreOptions& opt = {},
                                               QuantFormat format = QuantFormat::bf16);
  static std::unique_ptr<ExpertHostStore> make(HostTier tier, const WeightSource& ws, const HostAllocator& allocator,
                                               const HostStoreOptions& opt = {},
                                               QuantFormat format = QuantFormat::bf16);
  ~ExpertHostStore();
  ExpertHostStore(const ExpertHostStore&) = delete;
  ExpertHostStore& operator=(const ExpertHostStore&) = delete;

  HostTier tier() const { return tier_; }
  int n_layers() const { return n_layers_; }
  int n_experts() const { return n_experts_; }
  int top_k() const { return top_k_; }
  int hidden() const { return hidden_; }
  int inter() const { return inter_; }
  QuantFormat format() const { return layout_.format; }
  const ExpertLayout& layout() const { return layout_; }
  // Bytes of one bf16 matrix (hidden * inter * 2; in another format, w1's parts) and of
  // one expert in its layout (what a slot holds and a load moves).
  uint64_t matrix_bytes() const { return layout_.offset[1][0]; }
  uint64_t expert_bytes() const { return layout_.total_bytes; }
  // "pinned: 256 experts x 336.00 MiB = 84.00 GiB in cudaHostAlloc (page-locked), filled in 51.2 s"
  // or "disk: pread from 19 file(s) of DIR with O_DIRECT (aligned 4096)".
  std::string describe() const;

  // ---- pinned tier ----
  // The expert's w1 | w3 | w2, contiguous (expert_bytes(), layout()). Throws on the disk tier.
  const uint16_t* expert(int layer, int expert) const;
  double pin_seconds() const { return pin_seconds_; }    // allocate + fill, wall clock
  double alloc_seconds() const { return alloc_seconds_; } // inside the allocator, summed over threads
  uint64_t host_bytes() const { return host_bytes_; }      // bytes held (pinned tier)
  const std::string& allocator_name() const { return alloc_.name; }
  bool page_locked() const { return alloc_.page_locked; }

  // ---- disk tier ----
  // Bytes a staging buffer must have for read_expert (expert_bytes + alignment slack).
  uint64_t staging_bytes() const { return staging_bytes_; }
  // Alignment the staging buffer must have (4096; page-locked memory has it).
  static constexpr uint64_t kStagingAlign = 4096;
  // Reads the expert's tensors (every part of the three matrices) from the checkpoint into `staging` (staging_bytes()
  // bytes, kStagingAlign-aligned); returns where each one lies. Throws Error naming the
  // file and offset on a failed or short read. Thread-compatible (no shared state).
  StagedExpert read_expert(int layer, int expert, void* staging) const;
  DiskReadMode read_mode() const { return mode_; }
  // The checkpoint's read bandwidth as this store reads it (the same files, the same
  // O_DIRECT / fadvise mode), with `readers` threads reading distinct expert tensors
  // spread over the model in parallel until about `bytes` are in: what the disk can
  // give, not what one-at-a-time reads get. GB/s (1e9 B/s). Not counted in bytes_read().
  double measure_read_gbps(int readers = 4, uint64_t bytes = 2ull << 30) const;
  uint64_t bytes_read() const { return bytes_read_.load(); }  // file bytes read so far (supersets included)

 private:
  ExpertHostStore() = default;
  // A store of `tier` with the model's expert shape filled in (the rest is the tier's).
  static std::unique_ptr<ExpertHostStore> shaped(HostTier tier, const ModelConfig& c, QuantFormat format,
                                                 bool zero_points);
  struct Piece {  // one tensor in a file (disk tier)
    int fd = -1;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  // Bytes one tensor takes in a staging buffer: the tensor rounded up to the alignment,
  // plus the slack an O_DIRECT read of an unaligned tensor needs.
  uint64_t region_bytes() const;
  // Reads one tensor into staging at region `region` (0..8); returns its offset there.
  uint64_t read_piece(const Piece& p, int region, uint8_t* staging) const;
  // The file read behind read_piece: the tensor (an aligned superset with O_DIRECT) into
  // dst; sets *lead to the tensor's offset in dst; returns the bytes read. Not counted.
  uint64_t read_raw(const Piece& p, uint8_t* dst, uint64_t* lead) const;

  HostTier tier_ = HostTier::pinned;
  int n_layers_ = 0, n_experts_ = 0, top_k_ = 0, hidden_ = 0, inter_ = 0;
  ExpertLayout layout_;
  std::string source_;
  // pinned
  HostAllocator alloc_;
  std::vector<void*> chunks_;
  std::vector<const uint16_t*> experts_;  // (layers * experts)
  uint64_t host_bytes_ = 0;
  double pin_seconds_ = 0, alloc_seconds_ = 0;
  // disk
  std::vector<std::string> files_;
  std::vector<int> fds_;              // per file, as opened (O_DIRECT or not)
  std::vector<Piece> pieces_;         // (layers * experts * 3 * n_parts): w1, w3, w2, each its parts
  uint64_t staging_bytes_ = 0;
  DiskReadMode mode_ = DiskReadMode::direct;
  mutable std::atomic<uint64_t> bytes_read_{0};
};

}  // namespace moebench

// expert_host_store.cpp: see expert_host_store.h.
#include "engine/expert_host_store.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "common/error.h"
#include "common/units.h"
#include "engine/shard.h"

namespace moebench {

namespace {

constexpr uint64_t kAlign = ExpertHostStore::kStagingAlign;


double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A one-line progress bar on stderr, redrawn when the shown percentage changes.
class Progress {
 public:
  Progress(bool on, std::string what, uint64_t total) : on_(on), what_(std::move(what)), total_(total) {}
  void add(uint64_t bytes) {
    std::lock_guard<std::mutex> lk(mu_);
    done_ += bytes;
    if (!on_) return;
    const int pct = total_ ? static_cast<int>(done_ * 100 / total_) : 100;
    if (pct == shown_) return;
    shown_ = pct;
    const int width = 30, fill = pct * width / 100;
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% %s / %s  %.1f s", what_.c_str(), fill,
                 "##############################", width - fill, "", pct, format_bytes(done_).c_str(),
                 format_bytes(total_).c_str(), seconds_since(t0_));
    std::fflush(stderr);
  }
  void finish() {
    if (on_ && shown_ >= 0) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  std::string what_;
  uint64_t total_, done_ = 0;
  int shown_ = -1;
  std::mutex mu_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace

HostAllocator aligned_host_allocator() {
  HostAllocator a;
  a.name = "aligned host memory (pageable)";
  a.alloc = [](size_t bytes) -> void* {
    void* p = std::aligned_alloc(kAlign, round_up(std::max<size_t>(bytes, 1), kAlign));
    if (!p) fail("host store: aligned_alloc of {} failed", format_bytes(bytes));
    return p;
  };
  a.free = [](void* p) { std::free(p); };
  a.page_locked = false;
  return a;
}

const char* host_tier_name(HostTier t) { return t == HostTier::pinned ? "pinned" : "disk"; }

HostTier parse_host_tier(const std::string& s) {
  if (s == "pinned") return HostTier::pinned;
  if (s == "disk") return HostTier::disk;
  fail("expert host store: tier '{}' is not a host tier, expected pinned|disk", s);
}

const char* disk_read_mode_name(DiskReadMode m) {
  switch (m) {
    case DiskReadMode::direct: return "O_DIRECT";
    case DiskReadMode::fadvise_dontneed: return "posix_fadvise(POSIX_FADV_DONTNEED) before each read";
    case DiskReadMode::page_cache: return "the page cache (no O_DIRECT, no fadvise: test mode)";
  }
  return "?";
}

ExpertHostStore::~ExpertHostStore() {
  for (void* c : chunks_)
    if (c && alloc_.free) alloc_.free(c);
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

std::unique_ptr<ExpertHostStore> ExpertHostStore::make(HostTier tier, const WeightSource& ws,
                                                       const HostAllocator& allocator, const HostStoreOptions& opt,
                                                       QuantFormat format) {
  return tier == HostTier::pinned ? pinned(ws, allocator, opt, format) : disk(ws, opt, format);
}

namespace {
// Whether a checkpoint stores its int4 experts with zero points (then the store keeps them).
bool stored_zero_points(const WeightSource& ws, QuantFormat format) {
  return format == QuantFormat::int4 && ws.expert_zero_points();
}
}  // namespace

std::unique_ptr<ExpertHostStore> ExpertHostStore::shaped(HostTier tier, const ModelConfig& c, QuantFormat format,
                                                         bool zero_points) {
  std::unique_ptr<ExpertHostStore> s(new ExpertHostStore());
  s->tier_ = tier;
  s->n_layers_ = c.num_hidden_layers;
  s->n_experts_ = c.num_local_experts;
  s->top_k_ = c.num_experts_per_tok;
  s->hidden_ = c.hidden_size;
  s->inter_ = c.intermediate_size;
  s->layout_ = expert_layout(c, format, zero_points);
  return s;
}

std::unique_ptr<ExpertHostStore> ExpertHostStore::pinned(const WeightSource& ws, const HostAllocator& allocator,
                                                         const HostStoreOptions& opt, QuantFormat format) {
  if (!allocator.alloc || !allocator.free) fail("host store: the allocator '{}' has no alloc/free", allocator.name);
  const bool sharded = opt.tp_world > 1;
  if (sharded && format != QuantFormat::bf16)
    fail("host store: tensor-parallel slices of {} experts are not supported (bf16 only)", quant_format_name(format));
  const ModelConfig c = tp_rank_config(ws.config(), opt.tp_rank, opt.tp_world);
  std::unique_ptr<ExpertHostStore> s = shaped(HostTier::pinned, c, format, stored_zero_points(ws, format));
  s->source_ = sharded ? fmt::format("{} (tensor-parallel slice {} of {})", ws.describe(), opt.tp_rank, opt.tp_world)
                       : ws.describe();
  s->alloc_ = allocator;

  const uint64_t eb = s->expert_bytes();
  const int n = s->n_layers_ * s->n_experts_;
  const int per_chunk = static_cast<int>(std::clamp<uint64_t>(opt.chunk_bytes / eb, 1, static_cast<uint64_t>(n)));
  const int n_chunks = (n + per_chunk - 1) / per_chunk;
  s->chunks_.assign(n_chunks, nullptr);
  s->experts_.assign(n, nullptr);
  s->host_bytes_ = eb * static_cast<uint64_t>(n);
  {
    const uint64_t int4_bytes = moebench::expert_bytes(c, QuantFormat::int4) * static_cast<uint64_t>(n);
    const std::string disk = "expert_tier=disk reads each expert from the checkpoint when it is needed";
    check_host_room(s->host_bytes_,
                    fmt::format("the pinned tier's {} {} experts of {}", n, quant_format_name(format), c.name),
                    format == QuantFormat::int4
                        ? disk
                        : fmt::format("expert_dtype=int4 holds them in {}, or {}",
                                      format_bytes(static_cast<double>(int4_bytes)), disk),
                    opt.host_memory ? *opt.host_memory : host_memory());
  }

  int threads = opt.threads > 0 ? opt.threads : std::min(16, omp_get_num_procs());
  threads = std::max(1, std::min(threads, n_chunks));
  const bool bar = opt.progress > 0 || (opt.progress < 0 && ::isatty(2));
  Progress progress(bar, "pinning experts", s->host_bytes_);
  std::mutex err_mu;
  std::string err;
  std::atomic<int64_t> alloc_ns{0};
  const auto t0 = std::chrono::steady_clock::now();

  // One tensor's bf16 bytes into dst: straight from the mapping when the checkpoint is
  // bf16, through the WeightSource's conversion otherwise (or the synthetic generator).
  auto fill_tensor = [&](const TensorSpec& spec, uint8_t* expert, int w) {
    const ExpertLayout& L = s->layout_;
    if (format != QuantFormat::bf16) {  // the format's parts, as the CPU backend gets them
      const QuantMatrix q = ws.read_quant(spec, format);
      const std::vector<uint8_t>* part[3] = {&q.q, &q.scale, &q.zero};
      for (int p = 0; p < L.n_parts; ++p) {
        if (part[p]->size() != L.bytes[w][p])
          fail("host store: {} part {} has {} bytes, expected {}", spec.name, p, part[p]->size(), L.bytes[w][p]);
        std::memcpy(expert + L.offset[w][p], part[p]->data(), part[p]->size());
        // The alignment padding after the part is zeroed: a slot's bytes are all defined.
        const uint64_t end = L.offset[w][p] + L.bytes[w][p];
        const uint64_t next = p + 1 < L.n_parts ? L.offset[w][p + 1] : w < 2 ? L.offset[w + 1][0] : L.total_bytes;
        std::memset(expert + end, 0, next - end);
      }
      return;
    }
    uint16_t* dst = reinterpret_cast<uint16_t*>(expert + L.offset[w][0]);
    if (sharded) {  // the whole tensor, then this rank's slice of it
      const TensorSpec full = tensor_spec(ws.config(), spec.name);
      const TensorSlice sl = tp_slice(ws.config(), spec.name, opt.tp_rank, opt.tp_world);
      if (!ws.ckpt() && ws.synth_dtype() == DType::bf16 && sl.kind == TensorSlice::Kind::rows) {
        // A synthetic row block is the generator's run from the block's first element.
        synth_fill(full, ws.seed(), DType::bf16, dst, static_cast<int64_t>(sl.range.begin) * full.shape[1], spec.numel());
        return;
      }
      std::vector<uint16_t> whole(static_cast<size_t>(full.numel()));
      ws.read_bf16(full, whole.data());
      const std::vector<uint16_t> mine = slice_tensor(whole.data(), full, sl);
      std::memcpy(dst, mine.data(), mine.size() * sizeof(uint16_t));
      return;
    }
    if (const TensorView* v = ws.stored_bf16(spec)) {  // the mapped bytes
      std::memcpy(dst, v->data, v->nbytes);
      return;
    }
    ws.read_bf16(spec, dst);
  };

#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int ch = 0; ch < n_chunks; ++ch) {
    {
      std::lock_guard<std::mutex> lk(err_mu);
      if (!err.empty()) continue;
    }
    try {
      const int first = ch * per_chunk, last = std::min(n, first + per_chunk);
      const uint64_t bytes = eb * static_cast<uint64_t>(last - first);
      const auto ta = std::chrono::steady_clock::now();
      void* p = allocator.alloc(bytes);
      alloc_ns += static_cast<int64_t>(seconds_since(ta) * 1e9);
      if (!p) fail("host store: {} returned no memory for {}", allocator.name, format_bytes(bytes));
      s->chunks_[ch] = p;
      for (int i = first; i < last; ++i) {
        const int l = i / s->n_experts_, e = i % s->n_experts_;
        uint8_t* base = static_cast<uint8_t*>(p) + eb * (i - first);
        for (int w = 0; w < 3; ++w) fill_tensor(tensor_spec(c, names::expert(l, e, names::kExpertSlotOrder[w])), base, w);
        s->experts_[i] = reinterpret_cast<const uint16_t*>(base);
        progress.add(eb);
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lk(err_mu);
      if (err.empty()) err = e.what();
    }
  }
  progress.finish();
  if (!err.empty())
    fail("host store: filling {} of experts ({} x {}) with {} failed: {}", format_bytes(s->host_bytes_), n,
         format_bytes(eb), allocator.name, err);
  s->pin_seconds_ = seconds_since(t0);
  s->alloc_seconds_ = static_cast<double>(alloc_ns.load()) * 1e-9;
  return s;
}

std::unique_ptr<ExpertHostStore> ExpertHostStore::disk(const WeightSource& ws, const HostStoreOptions& opt,
                                                       QuantFormat format) {
  if (opt.tp_world > 1) fail("host store: the disk tier reads whole experts from the checkpoint; tensor parallelism needs the pinned tier");
  const ModelConfig& c = ws.config();
  const Checkpoint* ck = ws.ckpt();
  if (!ck)
    fail("expert tier 'disk' needs a checkpoint on disk, but the weights are {} (no file to read experts from): "
         "write one with `moebench make-model` and pass its folder, or use expert_tier=pinned",
         ws.describe());
  if (ws.expert_format() != format)
    fail("expert tier 'disk' copies expert bytes as they are stored: {} stores its experts as {}, expert_dtype={} "
         "needs a checkpoint in {} (make-model --dtype {}) or expert_tier=pinned",
         ck->dir(), quant_format_name(ws.expert_format()), quant_format_name(format), quant_format_name(format),
         quant_format_name(format));
  std::unique_ptr<ExpertHostStore> s = shaped(HostTier::disk, c, format, stored_zero_points(ws, format));
  s->source_ = ck->dir();
  s->staging_bytes_ = 3 * static_cast<uint64_t>(s->layout_.n_parts) * s->region_bytes();
  s->mode_ = opt.allow_page_cache ? DiskReadMode::page_cache : DiskReadMode::direct;

  std::map<std::string, int> file_index;
  // O_DIRECT is decided once, on the first file: refused at open (EINVAL) or at the
  // first aligned read (some filesystems accept the flag and refuse the read).
  auto direct_works = [](const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd < 0) return false;
    void* probe = std::aligned_alloc(kAlign, kAlign);
    const ssize_t r = ::pread(fd, probe, kAlign, 0);
    std::free(probe);
    ::close(fd);
    return r >= 0;
  };
  auto open_file = [&](const std::string& path) {
    if (file_index.count(path)) return;
    if (s->fds_.empty() && s->mode_ == DiskReadMode::direct && !direct_works(path))
      s->mode_ = DiskReadMode::fadvise_dontneed;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (s->mode_ == DiskReadMode::direct ? O_DIRECT : 0));
    if (fd < 0) fail("expert tier 'disk': cannot open {}: {}", path, std::strerror(errno));
    file_index[path] = static_cast<int>(s->fds_.size());
    s->fds_.push_back(fd);
    s->files_.push_back(path);
  };

  const int n = s->n_layers_ * s->n_experts_;
  struct Where {
    std::string file;
    uint64_t offset, bytes;
  };
  std::vector<Where> where;  // per piece, resolved to fds after
  const ExpertLayout& L = s->layout_;
  where.reserve(static_cast<size_t>(n) * 3 * L.n_parts);
  for (int i = 0; i < n; ++i) {
    const int l = i / s->n_experts_, e = i % s->n_experts_;
    for (int w = 0; w < 3; ++w) {
      const TensorSpec spec = tensor_spec(c, names::expert(l, e, names::kExpertSlotOrder[w]));
      std::vector<const TensorView*> parts;
      ws.stored_format(spec, &parts);
      if (static_cast<int>(parts.size()) != L.n_parts)
        fail("expert tier 'disk': {} is stored in {} part(s), expected {} ({})", spec.name, parts.size(), L.n_parts,
             quant_format_name(format));
      for (int p = 0; p < L.n_parts; ++p) {
        const TensorView& v = *parts[p];
        const DType want = quant_parts(format, spec.shape[0], spec.shape[1], L.n_parts > 2)[p].dtype;
        if (v.dtype != want)
          fail("expert tier 'disk': {} in {} is {}, expected {} (the disk tier copies expert bytes as they are "
               "stored; convert the checkpoint or use expert_tier=pinned)",
               v.name, v.file ? *v.file : ck->dir(), dtype_name(v.dtype), dtype_name(want));
        if (v.nbytes != L.bytes[w][p] || !v.file)
          fail("expert tier 'disk': {} has {} bytes, expected {}", v.name, v.nbytes, L.bytes[w][p]);
        where.push_back(Where{*v.file, v.file_offset, v.nbytes});
      }
    }
  }
  for (auto& w : where) open_file(w.file);
  s->pieces_.reserve(where.size());
  for (auto& w : where) s->pieces_.push_back(Piece{s->fds_[file_index.at(w.file)], w.offset, w.bytes});
  return s;
}

const uint16_t* ExpertHostStore::expert(int layer, int e) const {
  if (tier_ != HostTier::pinned) fail("host store: expert() on the {} tier (use read_expert)", host_tier_name(tier_));
  if (layer < 0 || layer >= n_layers_ || e < 0 || e >= n_experts_)
    fail("host store: expert ({}, {}) out of range ({} layers, {} experts)", layer, e, n_layers_, n_experts_);
  return experts_[static_cast<size_t>(layer) * n_experts_ + e];
}

uint64_t ExpertHostStore::region_bytes() const {
  uint64_t largest = 0;
  for (int m = 0; m < 3; ++m)
    for (int p = 0; p < layout_.n_parts; ++p) largest = std::max(largest, layout_.bytes[m][p]);
  return round_up(largest, kAlign) + kAlign;
}

uint64_t ExpertHostStore::read_piece(const Piece& p, int region, uint8_t* staging) const {
  uint64_t lead = 0;
  bytes_read_ += read_raw(p, staging + region_bytes() * region, &lead);
  return region_bytes() * region + lead;
}

uint64_t ExpertHostStore::read_raw(const Piece& p, uint8_t* dst, uint64_t* lead_out) const {
  uint64_t begin = p.offset, length = p.bytes, lead = 0;
  if (mode_ == DiskReadMode::direct) {
    begin = p.offset / kAlign * kAlign;
    lead = p.offset - begin;
    length = round_up(lead + p.bytes, kAlign);
  } else if (mode_ == DiskReadMode::fadvise_dontneed) {
    (void)::posix_fadvise(p.fd, static_cast<off_t>(p.offset), static_cast<off_t>(p.bytes),
                          POSIX_FADV_DONTNEED);
  }
  uint64_t got = 0;
  while (got < length) {
    ssize_t r = ::pread(p.fd, dst + got, length - got, static_cast<off_t>(begin + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail("expert tier 'disk': pread of {} at offset {} failed ({}): {}", format_bytes(length - got), begin + got,
           disk_read_mode_name(mode_), std::strerror(errno));
    }
    if (r == 0) break;  // end of file: fine once the tensor itself is in
    got += static_cast<uint64_t>(r);
  }
  if (got < lead + p.bytes)
    fail("expert tier 'disk': short read at offset {}: {} of {} bytes (file truncated?)", p.offset,
         got > lead ? got - lead : 0, p.bytes);
  *lead_out = lead;
  return got;
}

double ExpertHostStore::measure_read_gbps(int readers, uint64_t bytes) const {
  if (tier_ != HostTier::disk) fail("host store: measure_read_gbps() on the {} tier", host_tier_name(tier_));
  if (readers < 1 || pieces_.empty()) fail("host store: measure_read_gbps needs readers >= 1 and a tensor to read");
  // Distinct tensors spread evenly over the model (so over its files), at least one per reader.
  const uint64_t want = std::max<uint64_t>(static_cast<uint64_t>(readers), (bytes + pieces_[0].bytes - 1) / pieces_[0].bytes);
  const int n = static_cast<int>(std::min<uint64_t>(want, pieces_.size()));
  std::vector<uint8_t*> bufs(static_cast<size_t>(readers));
  for (auto& b : bufs)
    if (!(b = static_cast<uint8_t*>(std::aligned_alloc(kAlign, region_bytes())))) {
      for (auto* q : bufs) std::free(q);
      fail("host store: disk read probe: cannot allocate a {} read buffer", format_bytes(region_bytes()));
    }
  std::mutex err_mu;
  std::string err;
  std::atomic<uint64_t> total{0};
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(dynamic, 1) num_threads(readers)
  for (int i = 0; i < n; ++i) {
    try {
      uint64_t lead = 0;
      total += read_raw(pieces_[static_cast<size_t>(i) * pieces_.size() / n], bufs[omp_get_thread_num()], &lead);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lk(err_mu);
      if (err.empty()) err = e.what();
    }
  }
  const double sec = seconds_since(t0);
  for (auto* b : bufs) std::free(b);
  if (!err.empty()) fail("host store: disk read probe: {}", err);
  return sec > 0 ? static_cast<double>(total.load()) / sec / 1e9 : 0.0;
}

StagedExpert ExpertHostStore::read_expert(int layer, int e, void* staging) const {
  if (tier_ != HostTier::disk) fail("host store: read_expert() on the {} tier", host_tier_name(tier_));
  if (layer < 0 || layer >= n_layers_ || e < 0 || e >= n_experts_)
    fail("host store: expert ({}, {}) out of range ({} layers, {} experts)", layer, e, n_layers_, n_experts_);
  if (reinterpret_cast<uintptr_t>(staging) % kAlign != 0)
    fail("host store: staging buffer is not {}-byte aligned", kAlign);
  const int np = layout_.n_parts;
  const size_t i = (static_cast<size_t>(layer) * n_experts_ + e) * 3 * np;
  uint8_t* st = static_cast<uint8_t*>(staging);
  StagedExpert out;
  for (int m = 0; m < 3; ++m)
    for (int p = 0; p < np; ++p) out.part[m][p] = read_piece(pieces_[i + m * np + p], m * np + p, st);
  out.w1 = out.part[0][0];
  out.w3 = out.part[1][0];
  out.w2 = out.part[2][0];
  return out;
}

std::string ExpertHostStore::describe() const {
  const int n = n_layers_ * n_experts_;
  if (tier_ == HostTier::pinned)
    return fmt::format("pinned: {} experts x {} ({}) = {} in {}, filled from {} in {:.2f} s ({:.2f} s in the allocator, summed over threads)",
                       n, format_bytes(expert_bytes()), quant_format_name(layout_.format), format_bytes(host_bytes_), alloc_.name, source_,
                       pin_seconds_, alloc_seconds_);
  return fmt::format("disk ({}): pread from {} file(s) of {} with {}{}", quant_format_name(layout_.format), files_.size(), source_,
                     disk_read_mode_name(mode_), mode_ == DiskReadMode::direct ? " (aligned 4096)" : "");
}

}  // namespace moebench

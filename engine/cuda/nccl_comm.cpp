// nccl_comm.cpp: see nccl_comm.h. NCCL's entry points come from dlopen/dlsym once,
// typed from nccl.h's own declarations.
#if MOEBENCH_HAVE_NCCL
#include "engine/cuda/nccl_comm.h"

#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <exception>
#include <thread>

#include "engine/cuda/check.cuh"
#include "common/error.h"

namespace moebench::cuda {

namespace {

struct NcclApi {
  void* lib = nullptr;
  decltype(&ncclGetVersion) GetVersion = nullptr;
  decltype(&ncclCommInitAll) CommInitAll = nullptr;
  decltype(&ncclCommDestroy) CommDestroy = nullptr;
  decltype(&ncclGetErrorString) GetErrorString = nullptr;
  decltype(&ncclGetLastError) GetLastError = nullptr;
  decltype(&ncclAllReduce) AllReduce = nullptr;
  decltype(&ncclSend) Send = nullptr;
  decltype(&ncclRecv) Recv = nullptr;
  decltype(&ncclGroupStart) GroupStart = nullptr;
  decltype(&ncclGroupEnd) GroupEnd = nullptr;
  // Symmetric memory (NCCL 2.27 and later; null where the library predates it).
  decltype(&ncclMemAlloc) MemAlloc = nullptr;
  decltype(&ncclMemFree) MemFree = nullptr;
  decltype(&ncclCommWindowRegister) CommWindowRegister = nullptr;
  decltype(&ncclCommWindowDeregister) CommWindowDeregister = nullptr;
};

template <class F>
void bind_symbol(void* lib, const char* name, F& fn, const std::string& path) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) fail("{}: symbol {} not found (an NCCL 2.13 or later is needed)", path, name);
}

NcclApi load_api() {
  NcclApi a;
  std::string tried = "libnccl.so.2";
  void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  std::string path = "libnccl.so.2";
#ifdef MOEBENCH_NCCL_LIBRARY
  if (!lib) {
    lib = dlopen(MOEBENCH_NCCL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    path = MOEBENCH_NCCL_LIBRARY;
    tried += std::string(", ") + MOEBENCH_NCCL_LIBRARY;
  }
#endif
  if (!lib)
    fail("NCCL could not be opened (tried {}: {}); more than one GPU needs libnccl.so.2: put its folder on "
         "LD_LIBRARY_PATH",
         tried, dlerror());
  a.lib = lib;
  bind_symbol(lib, "ncclGetVersion", a.GetVersion, path);
  bind_symbol(lib, "ncclCommInitAll", a.CommInitAll, path);
  bind_symbol(lib, "ncclCommDestroy", a.CommDestroy, path);
  bind_symbol(lib, "ncclGetErrorString", a.GetErrorString, path);
  bind_symbol(lib, "ncclGetLastError", a.GetLastError, path);
  bind_symbol(lib, "ncclAllReduce", a.AllReduce, path);
  bind_symbol(lib, "ncclSend", a.Send, path);
  bind_symbol(lib, "ncclRecv", a.Recv, path);
  bind_symbol(lib, "ncclGroupStart", a.GroupStart, path);
  bind_symbol(lib, "ncclGroupEnd", a.GroupEnd, path);
  a.MemAlloc = reinterpret_cast<decltype(a.MemAlloc)>(dlsym(lib, "ncclMemAlloc"));
  a.MemFree = reinterpret_cast<decltype(a.MemFree)>(dlsym(lib, "ncclMemFree"));
  a.CommWindowRegister = reinterpret_cast<decltype(a.CommWindowRegister)>(dlsym(lib, "ncclCommWindowRegister"));
  a.CommWindowDeregister = reinterpret_cast<decltype(a.CommWindowDeregister)>(dlsym(lib, "ncclCommWindowDeregister"));
  return a;
}

// Loaded on first use by a thread-safe static (a failed load throws and is retried next time).
const NcclApi& api() {
  static const NcclApi a = load_api();
  return a;
}

[[noreturn]] void throw_nccl(ncclResult_t r, ncclComm_t comm, const char* what, const char* file, int line) {
  const char* last = api().GetLastError(comm);
  fail("{}:{}: {} failed: {} ({})", file, line, what, api().GetErrorString(r), last && *last ? last : "no detail");
}

#define NCCL_CHECK(comm, call)                                                                    \
  do {                                                                                            \
    ncclResult_t mb_nr_ = (call);                                                                 \
    if (mb_nr_ != ncclSuccess) throw_nccl(mb_nr_, comm, #call, __FILE__, __LINE__);                \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::i8: return ncclInt8;
    case DType::u8:
    case DType::f8_e4m3: return ncclUint8;  // moved, never reduced
  }
  fail("NCCL: element type {} has no NCCL type", static_cast<int>(t));
}

}  // namespace

struct NcclComms::Impl {
  std::vector<int> devices;
  std::vector<ncclComm_t> comms;
  std::vector<cudaStream_t> streams;
  // Symmetric buffers: (rank) per allocation, and their windows.
  std::vector<std::vector<void*>> sym_buffers;
  std::vector<std::vector<ncclWindow_t>> sym_windows;

  // Deregisters (one group over the ranks) and frees one allocation; errors ignored (a
  // failed registration or a broken context leaves nothing better to do).
  void release(std::vector<void*>& bufs, std::vector<ncclWindow_t>& wins) {
    const NcclApi& a = api();
    bool any = false;
    for (ncclWindow_t w : wins) any = any || w;
    if (any) {
      a.GroupStart();
      for (size_t r = 0; r < wins.size(); ++r)
        if (wins[r]) {
          cudaSetDevice(devices[r]);
          a.CommWindowDeregister(comms[r], wins[r]);
        }
      a.GroupEnd();
    }
    for (size_t r = 0; r < bufs.size(); ++r)
      if (bufs[r]) {
        cudaSetDevice(devices[r]);
        a.MemFree(bufs[r]);
      }
    bufs.clear();
    wins.clear();
  }
};

NcclComms::NcclComms(std::vector<int> devices) : impl_(std::make_unique<Impl>()) {
  if (devices.empty()) fail("NCCL communicators: no devices given");
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i] < 0 || devices[i] >= count)
      fail("NCCL communicators: device {} out of range 0..{}", devices[i], count - 1);
    for (size_t j = 0; j < i; ++j)
      if (devices[j] == devices[i]) fail("NCCL communicators: device {} is listed twice", devices[i]);
  }
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // no NVLink multicast unless the environment asks for it
  const NcclApi& a = api();
  impl_->devices = std::move(devices);
  const int n = static_cast<int>(impl_->devices.size());
  impl_->comms.assign(n, nullptr);
  NCCL_CHECK(nullptr, a.CommInitAll(impl_->comms.data(), n, impl_->devices.data()));
  impl_->streams.assign(n, nullptr);
  int current = 0;
  CUDA_CHECK(cudaGetDevice(&current));
  for (int r = 0; r < n; ++r) {
    CUDA_CHECK(cudaSetDevice(impl_->devices[r]));
    CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->streams[r], cudaStreamNonBlocking));
  }
  CUDA_CHECK(cudaSetDevice(current));
}

NcclComms::~NcclComms() {
  // No throwing here: release what was made, ignore errors of a broken context.
  for (size_t i = 0; i < impl_->sym_buffers.size(); ++i) impl_->release(impl_->sym_buffers[i], impl_->sym_windows[i]);
  for (size_t r = 0; r < impl_->streams.size(); ++r)
    if (impl_->streams[r]) {
      cudaSetDevice(impl_->devices[r]);
      cudaStreamSynchronize(impl_->streams[r]);
      cudaStreamDestroy(impl_->streams[r]);
    }
  for (ncclComm_t c : impl_->comms)
    if (c) api().CommDestroy(c);
}

int NcclComms::size() const { return static_cast<int>(impl_->devices.size()); }
int NcclComms::device(int rank) const { return impl_->devices.at(rank); }
cudaStream_t NcclComms::stream(int rank) const { return impl_->streams.at(rank); }

void NcclComms::all_reduce_sum(int rank, const void* send, void* recv, size_t count, DType dtype) {
  all_reduce_sum(rank, send, recv, count, dtype, stream(rank));
}

void NcclComms::all_reduce_sum(int rank, const void* send, void* recv, size_t count, DType dtype, cudaStream_t stream) {
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16)
    fail("NCCL all-reduce: element type {} cannot be summed (expected F32, BF16 or F16)", dtype_name(dtype));
  ncclComm_t c = impl_->comms.at(rank);
  NCCL_CHECK(c, api().AllReduce(send, recv, count, nccl_type(dtype), ncclSum, c, stream));
}

void NcclComms::all_to_all_rows(int rank, const void* send, std::span<const int64_t> send_rows, void* recv,
                                std::span<const int64_t> recv_rows, size_t row_elems, DType dtype) {
  const int n = size();
  if (static_cast<int>(send_rows.size()) != n || static_cast<int>(recv_rows.size()) != n)
    fail("NCCL all-to-all: {} send and {} receive counts for {} ranks", send_rows.size(), recv_rows.size(), n);
  ncclComm_t c = impl_->comms.at(rank);
  const size_t row_bytes = row_elems * dtype_size(dtype);
  const ncclDataType_t type = nccl_type(dtype);
  const auto* in = static_cast<const char*>(send);
  auto* out = static_cast<char*>(recv);
  for (int peer = 0; peer < n; ++peer)  // checked before the group opens
    if (send_rows[peer] < 0 || recv_rows[peer] < 0)
      fail("NCCL all-to-all: rank {} has a negative row count with rank {}", rank, peer);
  if (send_rows[rank] != recv_rows[rank])
    fail("NCCL all-to-all: rank {} keeps {} rows but expects {} from itself", rank, send_rows[rank], recv_rows[rank]);
  size_t send_off = 0, recv_off = 0;
  NCCL_CHECK(c, api().GroupStart());
  for (int peer = 0; peer < n; ++peer) {
    const size_t s = static_cast<size_t>(send_rows[peer]), r = static_cast<size_t>(recv_rows[peer]);
    if (peer == rank) {
      if (s) CUDA_CHECK(cudaMemcpyAsync(out + recv_off, in + send_off, s * row_bytes, cudaMemcpyDeviceToDevice, stream(rank)));
    } else {
      if (s) NCCL_CHECK(c, api().Send(in + send_off, s * row_elems, type, peer, c, stream(rank)));
      if (r) NCCL_CHECK(c, api().Recv(out + recv_off, r * row_elems, type, peer, c, stream(rank)));
    }
    send_off += s * row_bytes;
    recv_off += r * row_bytes;
  }
  NCCL_CHECK(c, api().GroupEnd());
}

void NcclComms::synchronize(int rank) { CUDA_CHECK(cudaStreamSynchronize(stream(rank))); }

void* NcclComms::handle(int rank) const { return impl_->comms.at(rank); }

void* NcclComms::symbol(const char* name) { return dlsym(api().lib, name); }

std::vector<void*> NcclComms::alloc_symmetric(size_t bytes, std::string* why, std::vector<void*>* windows) {
  const NcclApi& a = api();
  auto refuse = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return std::vector<void*>{};
  };
  if (!a.MemAlloc || !a.MemFree || !a.CommWindowRegister || !a.CommWindowDeregister)
    return refuse(fmt::format("NCCL {} has no symmetric memory (2.27 or later has)", library_version()));
  if (bytes == 0) return refuse("no bytes asked for");
  bytes = (bytes + NCCL_WIN_REQUIRED_ALIGNMENT - 1) / NCCL_WIN_REQUIRED_ALIGNMENT * NCCL_WIN_REQUIRED_ALIGNMENT;
  const int n = size();
  int current = 0;
  CUDA_CHECK(cudaGetDevice(&current));
  std::vector<void*> bufs(n, nullptr);
  std::vector<ncclWindow_t> wins(n, nullptr);
  std::string failed;
  for (int r = 0; r < n && failed.empty(); ++r) {
    CUDA_CHECK(cudaSetDevice(impl_->devices[r]));
    if (const ncclResult_t e = a.MemAlloc(&bufs[r], bytes); e != ncclSuccess)
      failed = fmt::format("ncclMemAlloc of {} bytes on GPU {}: {}", bytes, impl_->devices[r], a.GetErrorString(e));
  }
  if (failed.empty()) {  // collective: every rank's communicator registers, in one group
    ncclResult_t e = a.GroupStart();
    for (int r = 0; r < n && e == ncclSuccess; ++r) {
      CUDA_CHECK(cudaSetDevice(impl_->devices[r]));
      e = a.CommWindowRegister(impl_->comms[r], bufs[r], bytes, &wins[r], NCCL_WIN_COLL_SYMMETRIC);
    }
    const ncclResult_t end = a.GroupEnd();
    if (e == ncclSuccess) e = end;
    if (e != ncclSuccess) {
      const char* last = a.GetLastError(impl_->comms[0]);
      failed = fmt::format("ncclCommWindowRegister: {} ({})", a.GetErrorString(e), last && *last ? last : "no detail");
    }
    for (int r = 0; r < n && failed.empty(); ++r)
      if (!wins[r]) failed = fmt::format("ncclCommWindowRegister gave rank {} no window", r);
  }
  if (!failed.empty()) {
    impl_->release(bufs, wins);
    CUDA_CHECK(cudaSetDevice(current));
    return refuse(failed);
  }
  CUDA_CHECK(cudaSetDevice(current));
  impl_->sym_buffers.push_back(bufs);
  impl_->sym_windows.push_back(wins);
  if (windows) windows->assign(wins.begin(), wins.end());
  return bufs;
}

std::string NcclComms::library_version() {
  int v = 0;
  NCCL_CHECK(nullptr, api().GetVersion(&v));
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9
  return fmt::format("{}.{}.{}", v / 10000, v / 100 % 100, v % 100);
}

void run_per_rank(const NcclComms& comms, const std::function<void(int rank)>& f) {
  const int n = comms.size();
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        CUDA_CHECK(cudaSetDevice(comms.device(r)));
        f(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace moebench::cuda
#endif

// --threadpool own: the XNNPACK runtimes this backend creates run on a pthreadpool of the source tree's version,
// linked into the backend, instead of the wheel's (issue 20, docs/benchmarking.md).
//
// Why: the executorch 1.5.1 wheel's libexecutorch_threadpool.so carries a pthreadpool from before September 2025
// (no pthreadpool_create_v2), while LiteRT 2.3 links a newer one (it exports pthreadpool_create_v2 and
// pthreadpool_release_executor_threads), whose changes include waking only as many workers as an operator has
// tasks for and never using more threads than tasks (google/pthreadpool cf41b97, 9a175c3, b3bb63d). XNNPACK ends
// each of NASNet-Mobile's ~700 operators at a barrier, and in int8 most small operators have one or two 16 KiB
// tiles (scripts/elementwise_tiles.py), so the pool's per-operator cost is what separates the two runtimes at two
// threads.
//
// The only place the backend takes a pool is XNNCompiler.cpp (xnn_create_runtime_v4 with
// executorch::extension::threadpool::get_pthreadpool()). This file defines that function inside the backend (the
// library is linked with -Bsymbolic, so the backend's own references bind here, not to the wheel's export) and
// returns a pool of this pthreadpool, sized as the wheel's ThreadPool is now: the toolkit keeps sizing threads
// through the wheel (_unsafe_reset_threadpool), and a runtime keeps the pool it was created with, so pools are
// kept per size for the life of the process, never destroyed under a loaded program.
#include <executorch/extension/threadpool/threadpool.h>
#include <pthreadpool.h>

#include <map>
#include <mutex>

namespace executorch::extension::threadpool {

pthreadpool_t get_pthreadpool() {
  static std::mutex mutex;
  static std::map<size_t, pthreadpool_t> pools;
  ThreadPool* wheel = get_threadpool();
  const size_t threads = wheel != nullptr ? wheel->get_thread_count() : 1;
  std::lock_guard<std::mutex> lock(mutex);
  pthreadpool_t& pool = pools[threads];
  if (pool == nullptr) {
    pool = pthreadpool_create(threads);
  }
  return pool;
}

} // namespace executorch::extension::threadpool

/* Helpers of the GPU benchmark that need CUDA headers: event timing, device-side random fill, and
 * the two physical floors measured in the same run (copy bandwidth, dense FP8 throughput). */
#ifndef BENCH_GPU_FLOORS_H
#define BENCH_GPU_FLOORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The stream every benchmarked launch goes to (created on first use). */
void *bench_stream(void);

/* n+1 events recorded on bench_stream() around n back-to-back launches; the durations are their
 * differences. */
struct bench_events;
struct bench_events *bench_events_new(int n);
void bench_events_record(struct bench_events *ev, int i);
/* Waits, then writes the n durations in ms; returns their median. */
double bench_events_median(struct bench_events *ev, double *ms);
void bench_events_free(struct bench_events *ev);

/* Keep the GPU busy for about `ms` so that the launches queued behind it run back to back, not at
 * the pace the CPU issues them. */
void bench_spin(double ms);

/* Capture launch(ud, i) for i < n (each enqueues its kernels on bench_stream()) into one CUDA graph,
 * replay it `reps` times and return the median replay time divided by n: the cost of one launch
 * inside a graph, as a decode step runs it. Negative if capture fails. */
double bench_graph_ms(void (*launch)(void *ud, int i), void *ud, int n, int reps);

enum bench_fill { BENCH_E4M3, BENCH_BYTES, BENCH_E8M0_W, BENCH_E8M0_FP4, BENCH_BF16 };
/* Fill d[0..bytes) with random values of the kind (a hash of the index and seed). */
int bench_fill(void *d, size_t bytes, uint64_t seed, enum bench_fill kind);

/* Device-to-device cudaMemcpy of `bytes`: median over iters, in GB/s counting bytes read + written. */
double bench_copy_gbps(size_t bytes, int iters);
/* Dense e4m3 x e4m3 -> bf16 cuBLASLt product n x n x n (per-tensor scales, fast accumulation),
 * median TFLOP/s over iters; 0 if cuBLASLt refuses. */
double bench_fp8_dense_tflops(int n, int iters);

/* cudaProfilerStart (on) / cudaProfilerStop after the device is idle: the range an external profiler
 * started with capture off (ncu --profile-from-start off) records. */
void bench_profiler(int on);

#ifdef __cplusplus
}
#endif

#endif

// ctx-cuda-probe: lists the CUDA devices and the NCCL version this build links, so a GPU run can
// check its machine before it builds on it. Exits 77 (the test harness's "skip") without a device.
#include <cstdio>
#include <cuda_runtime.h>
#include <nccl.h>

int main()
{
    int nccl = 0;
    ncclGetVersion(&nccl);
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess || n == 0) {
        std::printf("{\"devices\":0,\"nccl\":%d,\"error\":\"%s\"}\n", nccl,
                    rc != cudaSuccess ? cudaGetErrorString(rc) : "no device");
        return 77;
    }
    std::printf("{\"devices\":%d,\"nccl\":%d,\"gpus\":[", n, nccl);
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        cudaGetDeviceProperties(&p, i);
        std::printf("%s{\"name\":\"%s\",\"sm\":\"%d.%d\",\"memory_bytes\":%zu,\"sms\":%d}", i ? "," : "",
                    p.name, p.major, p.minor, p.totalGlobalMem, p.multiProcessorCount);
    }
    std::printf("]}\n");
    return 0;
}

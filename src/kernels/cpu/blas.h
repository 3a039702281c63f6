#pragma once
// Row-major GEMM on raw pointers through the CBLAS interface of the system BLAS (OpenBLAS on
// Debian): C = alpha op(A) op(B) + beta C with op(A): m x k, op(B): k x n.
#include <cblas.h>
#include <dlfcn.h>

namespace spe::kernels::cpu {

inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// While alive, asks OpenBLAS (when it is the BLAS in use) for one thread per call, then restores
// its thread count. Our kernels call many small GEMMs from their own parallel regions; above
// OpenBLAS's size threshold each call would otherwise start its own threads on the same cores
// (measured: 10x slower at 128 x 128 x 64). Other BLAS libraries are left alone.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() {
    if (api().get && api().set && (saved_ = api().get()) > 1) api().set(1);
  }
  ~SingleThreadedBlas() {
    if (saved_ > 1) api().set(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  struct Api {
    int (*get)() = nullptr;
    void (*set)(int) = nullptr;
  };
  static const Api& api() {
    static const Api resolved = [] {
      Api a;
      a.get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
      a.set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
      return a;
    }();
    return resolved;
  }
  int saved_ = 0;
};

}  // namespace spe::kernels::cpu

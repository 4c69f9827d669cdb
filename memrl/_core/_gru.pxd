from cython cimport floating

cdef void gru_fwd(int T, int B, int I, int H, const floating* x, const floating* h0,
                  const unsigned char* reset, const floating* W_ih, const floating* W_hh,
                  const floating* b_ih, const floating* b_hh, floating* h,
                  floating* preact, floating* gates, floating* hn, floating* h_prev,
                  floating* W_hh_T, floating* gh, int mode) noexcept nogil
cdef void gru_bwd(int T, int B, int I, int H, const floating* x, const unsigned char* reset,
                  const floating* W_ih, const floating* W_hh, const floating* preact,
                  const floating* gates, const floating* hn, const floating* h_prev,
                  const floating* dy, floating* dW_ih, floating* dW_hh, floating* db_ih,
                  floating* db_hh, floating* dx, floating* dh0, floating* G, floating* Gh,
                  floating* carry, floating* dhp, int mode) noexcept nogil
cdef void gru_step_fwd(int B, int I, int H, const floating* x, floating* h,
                       const unsigned char* reset, const floating* W_ih, const floating* W_hh,
                       const floating* b_ih, const floating* b_hh, floating* gx, floating* gh,
                       int mode) noexcept nogil

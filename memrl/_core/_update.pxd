cpdef enum Algorithm:
    SAC = 0
    TD3 = 1
    DISCRETE_SAC = 2


cpdef enum Status:
    OK = 0
    NONFINITE_LOSS = 1          # a loss (or the entropy gap) is NaN or infinite
    NONFINITE_GRADIENT = 2      # a gradient entry is NaN or infinite

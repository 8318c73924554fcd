# The instruction-set level of the running CPU (CPUID through the compiler's
# __builtin_cpu_supports, which also checks that the OS saves the AVX/AVX-512 registers).
# Built without -march flags, so that it runs on any CPU of its architecture.
cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    #define RNNX_X86 1
    /* x86-64-v2, v3 and v4 as their defining features that gcc and clang both name:
       v3's F16C, LZCNT and MOVBE come with AVX2 + FMA + BMI1/2 on every CPU that has them. */
    static int rnnx_cpu_level(void) {
        __builtin_cpu_init();
        if (!(__builtin_cpu_supports("ssse3") && __builtin_cpu_supports("sse4.2")
              && __builtin_cpu_supports("popcnt")))
            return -1;
        if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
              && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2")))
            return 0;
        if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
              && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
              && __builtin_cpu_supports("avx512vl")))
            return 1;
        return 2;
    }
    #else
    #define RNNX_X86 0
    static int rnnx_cpu_level(void) { return 0; }
    #endif
    """
    int rnnx_cpu_level() noexcept nogil
    int RNNX_X86


def supported_levels():
    """Kernel levels this CPU runs, best last: ("baseline", "avx2", "avx512") up to what it
    has on x86-64 (baseline: x86-64-v2, SSE4.2; avx2: x86-64-v3; avx512: x86-64-v4), or
    ("baseline",) elsewhere (aarch64: NEON). Empty for an x86-64 CPU older than x86-64-v2."""
    names = ("baseline", "avx2", "avx512") if RNNX_X86 else ("baseline",)
    return names[:rnnx_cpu_level() + 1]

// The CPU engine compiled for the avx512 instruction set (flags in CMakeLists.txt).
#define FASTOPT_CPU_NS cpu_avx512
#include "engine.h"

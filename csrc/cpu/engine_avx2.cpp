// The CPU engine compiled for the avx2 instruction set (flags in CMakeLists.txt).
#define FASTOPT_CPU_NS cpu_avx2
#include "engine.h"

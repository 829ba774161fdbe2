// The CPU engine compiled for the baseline instruction set (flags in CMakeLists.txt).
#define FASTOPT_CPU_NS cpu_baseline
#include "engine.h"

/* What the capture programs need from the CPU architecture: the system
 * call numbers they tell apart, and where a system call's number and
 * arguments sit in the user registers the kernel saved at its entry
 * (bpf_task_pt_regs). One file per architecture; the build picks one with
 * -D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64 (host/build.rs, from the
 * target Cargo builds for).
 *
 * Each file defines NR_read ... NR_sendmmsg, struct pt_regs (with CO-RE
 * relocations, so only the fields read are declared), and
 *   SYSCALL_NR(regs)       the system call's number
 *   SYSCALL_ARG(regs, n)   its argument n (1-6) */
#ifndef WIRELENS_ARCH_H
#define WIRELENS_ARCH_H

#if defined(__TARGET_ARCH_arm64)
#include "arch/arm64.h"
#elif defined(__TARGET_ARCH_x86)
#include "arch/x86_64.h"
#else
#error "no architecture: compile with -D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64"
#endif

#endif

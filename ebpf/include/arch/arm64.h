/* arm64: the generic system call numbers (include/uapi/asm-generic/unistd.h)
 * and registers (arguments in x0-x5, the number in syscallno; x0 is
 * overwritten by the return value, so the first argument is orig_x0). */
#ifndef WIRELENS_ARCH_ARM64_H
#define WIRELENS_ARCH_ARM64_H

#define NR_read 63
#define NR_write 64
#define NR_readv 65
#define NR_writev 66
#define NR_sendfile 71
#define NR_splice 76
#define NR_sendto 206
#define NR_recvfrom 207
#define NR_sendmsg 211
#define NR_recvmsg 212
#define NR_recvmmsg 243
#define NR_sendmmsg 269

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
/* The kernel's struct wraps the user registers (x0-x30, sp, pc, pstate) in
 * an anonymous union at its start; CO-RE finds `regs` through it. */
struct pt_regs {
    unsigned long regs[31];
    unsigned long orig_x0;
    int syscallno;
};
#pragma clang attribute pop

#define SYSCALL_NR(regs) ((long)(regs)->syscallno)
#define SYSCALL_ARG_1(regs) ((regs)->orig_x0)
#define SYSCALL_ARG_2(regs) ((regs)->regs[1])
#define SYSCALL_ARG_3(regs) ((regs)->regs[2])
#define SYSCALL_ARG_4(regs) ((regs)->regs[3])
#define SYSCALL_ARG_5(regs) ((regs)->regs[4])
#define SYSCALL_ARG_6(regs) ((regs)->regs[5])
#define SYSCALL_ARG(regs, n) SYSCALL_ARG_##n(regs)

/* A user function's arguments at its entry and its return value at its
 * return (uprobes: the AAPCS64 calling convention). */
#define FUNC_ARG_1(r) ((r)->regs[0])
#define FUNC_ARG_2(r) ((r)->regs[1])
#define FUNC_ARG_3(r) ((r)->regs[2])
#define FUNC_ARG_4(r) ((r)->regs[3])
#define FUNC_RET(r) ((r)->regs[0])

#endif

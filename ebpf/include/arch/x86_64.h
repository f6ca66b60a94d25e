/* x86_64: system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) and
 * registers (arguments in di, si, dx, r10, r8, r9; the number in orig_ax). */
#ifndef WIRELENS_ARCH_X86_64_H
#define WIRELENS_ARCH_X86_64_H

#define NR_read 0
#define NR_write 1
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_splice 275
#define NR_recvmmsg 299
#define NR_sendmmsg 307

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct pt_regs {
    unsigned long r10;
    unsigned long r8;
    unsigned long r9;
    unsigned long dx;
    unsigned long si;
    unsigned long di;
    unsigned long cx;
    unsigned long ax;
    unsigned long orig_ax;
};
#pragma clang attribute pop

#define SYSCALL_NR(regs) ((long)(regs)->orig_ax)
#define SYSCALL_ARG_1(regs) ((regs)->di)
#define SYSCALL_ARG_2(regs) ((regs)->si)
#define SYSCALL_ARG_3(regs) ((regs)->dx)
#define SYSCALL_ARG_4(regs) ((regs)->r10)
#define SYSCALL_ARG_5(regs) ((regs)->r8)
#define SYSCALL_ARG_6(regs) ((regs)->r9)
#define SYSCALL_ARG(regs, n) SYSCALL_ARG_##n(regs)

/* A user function's arguments at its entry and its return value at its
 * return (uprobes: the System V calling convention). */
#define FUNC_ARG_1(regs) ((regs)->di)
#define FUNC_ARG_2(regs) ((regs)->si)
#define FUNC_ARG_3(regs) ((regs)->dx)
#define FUNC_ARG_4(regs) ((regs)->cx)
#define FUNC_RET(regs) ((regs)->ax)

#endif

/*
 * What the plugin needs of libc, and nothing more: a memory allocator and
 * the mem* functions. Built for wasm32 with bulk memory, so memcpy,
 * memmove and memset are single `memory.copy` / `memory.fill`
 * instructions.
 *
 * The allocator keeps a free list per power-of-two size class (16 bytes to
 * 1 GiB, an 8-byte header included) and takes new blocks from the end of
 * the heap, growing the instance's memory as needed. A freed block is
 * reused by the next allocation of its class; memory is never given back
 * (a WebAssembly memory cannot shrink). Plugins allocate per-connection
 * buffers and per-call columns of a few sizes, which this serves with at
 * most 2x waste and no fragmentation scans.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CLASSES 27 /* 16 << 26 = 1 GiB */
#define HEADER 16 /* keeps blocks 16-aligned, as max_align_t is on wasm32 */
#define PAGE 65536u

extern unsigned char __heap_base;

/* 64-bit so that a memory of 4 GiB (the most wasm32 has) does not wrap. */
static uint64_t heap_next, heap_end;
static bool heap_started;
static void *free_lists[CLASSES];

static int class_of(size_t size) {
    if (size == 0) size = 1; /* a free block holds its list link */
    if (size > ((size_t)16 << (CLASSES - 1)) - HEADER) return -1;
    size_t total = size + HEADER, block = 16;
    int c = 0;
    while (block < total) {
        block <<= 1;
        c++;
    }
    return c;
}

static void *take_from_heap(size_t block) {
    if (!heap_started) {
        heap_started = true;
        heap_next = ((uint64_t)(uintptr_t)&__heap_base + 15) & ~(uint64_t)15;
        heap_end = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
    }
    if (heap_next + block > heap_end) {
        uint64_t need = heap_next + block - heap_end;
        size_t pages = (size_t)((need + PAGE - 1) / PAGE);
        size_t old = __builtin_wasm_memory_grow(0, pages);
        if (old == (size_t)-1) return NULL;
        /* From what memory.grow says, in case anything else grew it. */
        heap_end = ((uint64_t)old + pages) * PAGE;
        if (heap_next + block > heap_end) return NULL;
    }
    void *p = (void *)(uintptr_t)heap_next;
    heap_next += block;
    return p;
}

void *malloc(size_t size) {
    int c = class_of(size);
    if (c < 0) return NULL;
    uint8_t *block = free_lists[c];
    if (block) {
        free_lists[c] = *(void **)(block + HEADER);
    } else {
        block = take_from_heap((size_t)16 << c);
        if (!block) return NULL;
    }
    *(uint32_t *)block = (uint32_t)c;
    return block + HEADER;
}

void free(void *ptr) {
    if (!ptr) return;
    uint8_t *block = (uint8_t *)ptr - HEADER;
    uint32_t c = *(uint32_t *)block;
    *(void **)ptr = free_lists[c];
    free_lists[c] = block;
}

void *realloc(void *ptr, size_t size) {
    if (!ptr) return malloc(size);
    uint32_t c = *(uint32_t *)((uint8_t *)ptr - HEADER);
    size_t room = ((size_t)16 << c) - HEADER;
    if (size <= room) return ptr;
    void *bigger = malloc(size);
    if (!bigger) return NULL;
    memcpy(bigger, ptr, room);
    free(ptr);
    return bigger;
}

void *calloc(size_t count, size_t size) {
    if (size && count > (size_t)-1 / size) return NULL;
    void *p = malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

_Noreturn void abort(void) {
    __builtin_trap();
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    __builtin_memcpy(dst, src, n);
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    __builtin_memmove(dst, src, n);
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    __builtin_memset(dst, c, n);
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}

void *memchr(const void *s, int c, size_t n) {
    const uint8_t *p = s;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == (uint8_t)c) return (void *)(p + i);
    }
    return NULL;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int strcmp(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return (uint8_t)*a - (uint8_t)*b;
}

int strncmp(const char *a, const char *b, size_t n) {
    for (; n; n--, a++, b++) {
        if (*a != *b || !*a) return (uint8_t)*a - (uint8_t)*b;
    }
    return 0;
}

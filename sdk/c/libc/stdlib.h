/* The C SDK's own stdlib.h: plugins run without libc (see wirelens.h). */
#ifndef WIRELENS_STDLIB_H
#define WIRELENS_STDLIB_H
#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
/* Stops the plugin (a trap): the host reports the call as failed. */
_Noreturn void abort(void);

#endif

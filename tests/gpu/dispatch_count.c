/* LD_PRELOAD shim: counts glDispatchCompute calls, the OpenGL ES compute dispatches that the
 * TFLite GPU delegate's GL backend issues (one or more per delegated kernel), so that a test
 * can tell the delegate ran from a silent CPU fallback (which dispatches nothing).
 *
 * MediaPipe links glDispatchCompute directly, but GL code may also fetch entry points with
 * eglGetProcAddress, so both paths lead to the counting wrapper. The real entry points come
 * from the GL libraries themselves: MediaPipe loads them privately (RTLD_LOCAL), out of
 * RTLD_NEXT's reach. No GL headers needed:
 *   gcc -shared -fPIC -O2 -o libdispatch_count.so dispatch_count.c -ldl
 * Read the count in the process through ctypes: dispatch_count(), dispatch_count_reset().
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <string.h>

typedef void (*gl_fn)(void);
typedef void (*dispatch_fn)(unsigned int, unsigned int, unsigned int);
typedef gl_fn (*proc_fn)(const char *);

static atomic_long calls;

static void *lib_symbol(const char *lib, const char *name) {
  void *handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) handle = dlopen(lib, RTLD_LAZY);
  return handle ? dlsym(handle, name) : NULL;
}

static proc_fn real_get_proc(void) {
  static proc_fn fn;
  if (!fn) fn = (proc_fn)lib_symbol("libEGL.so.1", "eglGetProcAddress");
  return fn;
}

static dispatch_fn real_dispatch(void) {
  static dispatch_fn fn;
  if (!fn) fn = (dispatch_fn)lib_symbol("libGLESv2.so.2", "glDispatchCompute");
  if (!fn && real_get_proc()) fn = (dispatch_fn)real_get_proc()("glDispatchCompute");
  return fn;
}

void glDispatchCompute(unsigned int x, unsigned int y, unsigned int z) {
  atomic_fetch_add(&calls, 1);
  real_dispatch()(x, y, z);
}

gl_fn eglGetProcAddress(const char *name) {
  if (name && strcmp(name, "glDispatchCompute") == 0) return (gl_fn)glDispatchCompute;
  return real_get_proc() ? real_get_proc()(name) : NULL;
}

long dispatch_count(void) { return atomic_load(&calls); }

void dispatch_count_reset(void) { atomic_store(&calls, 0); }

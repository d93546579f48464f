// fdpass.cc - sendmsg/recvmsg with SCM_RIGHTS (filled in by the fd-passing work).
#include "fdpass.h"

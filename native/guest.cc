// guest.cc - mount and power-off for the test guest (filled in by the test-bed work).
#include "guest.h"

/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Rust test programs under wine 8.
 *
 * Rust's standard library gets its random bytes (HashMap seeds) from ProcessPrng in
 * bcryptprimitives.dll. Windows 10 and later have it; wine 8.0 does not, so every Rust program
 * exits with STATUS_DLL_NOT_FOUND (c0000135) before main. This DLL exports that one function,
 * filled from advapi32's RtlGenRandom (SystemFunction036), which wine has. It is built by
 * scripts/cross-env.sh and put on WINEPATH for the test runs only; the library never uses it.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}

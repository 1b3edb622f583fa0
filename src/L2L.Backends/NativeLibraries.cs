// Helps .NET find the CUDA and OpenCL driver libraries under the names Linux drivers install.
using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;

namespace L2L.Backends;

/// <summary>
/// Registers a <see cref="NativeLibrary"/> resolver for the ILGPU assembly so that the CUDA
/// driver is found where only <c>libcuda.so.1</c> exists (no <c>libcuda.so</c> development
/// symlink), and likewise <c>libOpenCL.so.1</c>. Without it ILGPU silently reports no CUDA device.
/// </summary>
public static class NativeLibraries
{
    private static int _registered;

    /// <summary>Registers the resolver once per process; later calls do nothing.</summary>
    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1)
            return;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // Someone else registered a resolver for ILGPU already; keep theirs.
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        foreach (var candidate in Candidates(name))
        {
            if (NativeLibrary.TryLoad(candidate, assembly, path, out var handle))
                return handle;
        }
        return IntPtr.Zero; // fall back to the default probing
    }

    private static IEnumerable<string> Candidates(string name)
    {
        if (!OperatingSystem.IsLinux())
            yield break;
        if (name is "cuda" or "libcuda" or "libcuda.so")
        {
            yield return "libcuda.so";
            yield return "libcuda.so.1";
        }
        else if (name.Contains("OpenCL", StringComparison.OrdinalIgnoreCase))
        {
            yield return "libOpenCL.so";
            yield return "libOpenCL.so.1";
        }
    }
}

// One backend per device kind for the whole assembly (kernels load once); xunit.runner.json runs tests one at a time.
using System.Runtime.CompilerServices;
using L2L.Backends;
using L2L.TestSupport;
using Xunit;

[assembly: AssemblyFixture(typeof(BackendFixture))]

namespace L2L.Kernels.Tests;

internal static class KernelTestSetup
{
    /// <summary>Kernel tests run on GPU-shaped CPU groups so grouped kernels' shared-memory reductions are exercised.</summary>
    [ModuleInitializer]
    internal static void UseGroupedCpuDevice() => BackendFixture.CpuDevice = DeviceCatalog.GroupedCpuDevice;
}

// One backend per device kind for a whole test assembly, created on first use; absent kinds skip visibly.
using L2L.Backends;
using Xunit;

namespace L2L.TestSupport;

/// <summary>
/// Assembly-wide fixture holding one <see cref="Backend"/> per device kind, so kernels are loaded
/// once per test assembly. Register it with
/// <c>[assembly: AssemblyFixture(typeof(BackendFixture))]</c> and take it in a test class's constructor.
/// </summary>
public sealed class BackendFixture : IDisposable
{
    /// <summary>
    /// The CPU accelerator's shape for this test assembly: the engine's lean default unless an
    /// assembly sets another (the kernel tests use GPU-shaped groups) before the first test runs.
    /// </summary>
    public static ILGPU.Runtime.CPU.CPUDevice CpuDevice { get; set; } = DeviceCatalog.CpuDevice;

    private readonly Dictionary<DeviceKind, Backend?> _backends = new();
    private readonly object _gate = new();

    /// <summary>
    /// The backend for <paramref name="kind"/>; the calling test is reported as skipped when no such
    /// device is present.
    /// </summary>
    public Backend Get(DeviceKind kind)
    {
        lock (_gate)
        {
            if (!_backends.TryGetValue(kind, out var backend))
            {
                try { backend = Backend.Create(new DeviceSpec(kind), CpuDevice); }
                catch (DeviceNotFoundException) { backend = null; }
                _backends[kind] = backend;
            }
            if (backend is null)
                Assert.Skip($"No {kind} device on this machine.");
            return backend!;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var b in _backends.Values)
            b?.Dispose();
    }
}

/// <summary>Theory data: every device kind a test body should run on.</summary>
public static class Devices
{
    /// <summary>CPU, CUDA and OpenCL; tests on absent kinds are skipped by <see cref="BackendFixture.Get"/>.</summary>
    public static TheoryData<DeviceKind> All => new(DeviceKind.Cpu, DeviceKind.Cuda, DeviceKind.OpenCL);
}

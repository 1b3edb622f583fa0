// The GPU GEMM (128 x 128 tiles, 8 x 8 per thread, one kernel per layout) against the double reference, on a CPU
// accelerator with 256-thread groups as on a GPU, and on CUDA where present.
using ILGPU.Runtime.CPU;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class GemmLargeTileTests(BackendFixture fixture)
{
    // One warp-shaped CPU device with a single 256-thread group at a time: every simulated thread is an OS thread.
    private static readonly Lazy<Backend> GpuShapedCpu = new(() =>
        Backend.Create(new DeviceSpec(DeviceKind.Cpu), new CPUDevice(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 8, numMultiprocessors: 1)));

    private static readonly Dictionary<Backend, GemmOps> Loaded = new();

    // (m, n, k): ones, m < k, m > k, sizes around the 128 tile and the 8-deep K slice, whole interior tiles.
    private static readonly (int M, int N, int K)[] Shapes =
        [(1, 1, 1), (3, 7, 22), (22, 3, 127), (127, 22, 3), (129, 257, 9), (257, 129, 17), (128, 128, 16), (256, 130, 24), (7, 131, 1)];

    public static TheoryData<DeviceKind, GemmLayout> DevicesAndLayouts()
    {
        var data = new TheoryData<DeviceKind, GemmLayout>();
        foreach (var kind in new[] { DeviceKind.Cpu, DeviceKind.Cuda })
            foreach (var layout in Enum.GetValues<GemmLayout>())
                data.Add(kind, layout);
        return data;
    }

    private (Backend Backend, GemmOps Ops) Get(DeviceKind kind)
    {
        var backend = kind == DeviceKind.Cpu ? GpuShapedCpu.Value : fixture.Get(kind);
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(backend, out var ops))
                Loaded[backend] = ops = new GemmOps(backend, GemmPath.LargeTiles);
            return (backend, ops);
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndLayouts))]
    public void ProductMatchesReference(DeviceKind kind, GemmLayout layout)
    {
        var (backend, ops) = Get(kind);
        Assert.Equal(GemmPath.LargeTiles, ops.Path);
        var seed = 300;
        var option = 0;
        foreach (var (m, n, k) in Shapes)
        {
            // Each shape with the next of: plain, bias, accumulate, both with alpha != 1.
            var (withBias, accumulate, alpha) = (option % 4) switch { 0 => (false, false, 1f), 1 => (true, false, -0.75f), 2 => (false, true, 2.5f), _ => (true, true, -1.25f) };
            option++;
            Assert.True(GemmOps.FitsLargeTiles(m, n, k));
            var a = TestData.Normal(seed++, m * k);
            var b = TestData.Normal(seed++, k * n);
            var bias = TestData.Normal(seed++, n);
            var c0 = TestData.Normal(seed++, m * n);
            using var da = backend.Upload(a);
            using var db = backend.Upload(b);
            using var dbias = backend.Upload(bias);
            using var dc = backend.Upload(c0);
            ops.Gemm(backend.ComputeStream, dc.View, da.View, db.View, m, n, k, layout, accumulate, withBias ? dbias.View : default, alpha);
            var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, layout, alpha,
                withBias ? TestData.ToDouble(bias) : null, accumulate ? TestData.ToDouble(c0) : null);
            TensorAssert.Close(expected, backend.Download(dc), 2e-6 * k + 1e-6, 1e-5, $"{layout} m={m} n={n} k={k} bias={withBias} accumulate={accumulate} alpha={alpha}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndLayouts))]
    public void BatchedProductAndExtremeMagnitudesMatchReference(DeviceKind kind, GemmLayout layout)
    {
        var (backend, ops) = Get(kind);
        const int batch = 3, m = 130, n = 9, k = 21;
        var a = TestData.Normal(41, batch * m * k);
        var b = TestData.Normal(42, batch * k * n);
        for (var i = 0; i < a.Length; i += 5) a[i] *= 1e18f; // large and small magnitudes in one sum
        for (var i = 1; i < b.Length; i += 7) b[i] *= 1e-18f;
        var c0 = TestData.Normal(43, batch * m * n);
        using var da = backend.Upload(a);
        using var db = backend.Upload(b);
        using var dc = backend.Upload(c0);
        ops.GemmBatched(backend.ComputeStream, dc.View, da.View, db.View, batch, m, n, k, layout, accumulate: true, alpha: 0.5f);
        var expected = GemmReference.GemmBatched(TestData.ToDouble(a), TestData.ToDouble(b), batch, m, n, k, layout, 0.5, TestData.ToDouble(c0));
        var scale = expected.Max(Math.Abs);
        TensorAssert.Close(expected, backend.Download(dc), 1e-5 * scale, 1e-5, $"{layout} batched");
    }

    [Fact]
    public void ProductsTooLargeForThirtyTwoBitOffsetsFallBack()
    {
        Assert.True(GemmOps.FitsLargeTiles(50257, 768, 8192));
        Assert.False(GemmOps.FitsLargeTiles(1 << 20, 64, 4096)); // (M + 128) * (K + 8) > 2^31
        Assert.False(GemmOps.FitsLargeTiles(64, 1 << 20, 4096));
        var lean = fixture.Get(DeviceKind.Cpu);
        if (lean.Accelerator.MaxNumThreadsPerGroup < GemmKernels.LargeTileThreads)
            Assert.Contains("256 threads", Assert.Throws<ArgumentException>(() => new GemmOps(lean, GemmPath.LargeTiles)).Message);
    }
}

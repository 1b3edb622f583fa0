// Matrix products (every layout, bias, accumulate, alpha, batched) and the bias gradient against double references.
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class GemmTests(BackendFixture fixture)
{
    // "default" is what backend.Get<GemmOps>() picks (the barrier-free kernel on the CPU accelerator, 64 x 64 tiles on
    // GPUs); "direct" and "tiled" force the other kernel, "tiled" with a non-square group and a shallow K slice so
    // that row/column mix-ups and K-slice edges show up on every device.
    private static readonly string[] Variants = ["default", "direct", "tiled"];
    private static readonly ConditionalWeakTable<Backend, Dictionary<string, GemmOps>> Explicit = new();

    // (m, n, k): single elements, m < k, m > k, and shapes that are multiples of no tile size.
    private static readonly (int M, int N, int K)[] Shapes =
        [(1, 1, 1), (3, 7, 22), (22, 3, 127), (127, 22, 3), (7, 127, 1), (1, 3, 7), (65, 33, 70)];

    // (bias, accumulate, alpha): each option alone, together, and with alpha != 1.
    private static readonly (bool Bias, bool Accumulate, float Alpha)[] Options =
        [(false, false, 1f), (true, false, -0.75f), (false, true, 2.5f), (true, true, -1.25f)];

    public static TheoryData<DeviceKind, string> DevicesAndKernels
    {
        get
        {
            var data = new TheoryData<DeviceKind, string>();
            foreach (var row in TestSupport.Devices.All)
                foreach (var variant in Variants)
                    data.Add(row.Data, variant);
            return data;
        }
    }

    public static TheoryData<DeviceKind, string, GemmLayout> DevicesKernelsAndLayouts
    {
        get
        {
            var data = new TheoryData<DeviceKind, string, GemmLayout>();
            foreach (var row in TestSupport.Devices.All)
                foreach (var variant in Variants)
                    foreach (var layout in Enum.GetValues<GemmLayout>())
                        data.Add(row.Data, variant, layout);
            return data;
        }
    }

    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private GemmOps Ops(DeviceKind kind, string variant)
    {
        var backend = fixture.Get(kind);
        if (variant == "default")
            return backend.Get<GemmOps>();
        var table = Explicit.GetOrCreateValue(backend);
        lock (table)
        {
            if (!table.TryGetValue(variant, out var ops))
            {
                ops = variant == "direct" ? new GemmOps(backend, 0, 0, 0) : new GemmOps(backend, 4, 2, 8);
                table[variant] = ops;
            }
            return ops;
        }
    }

    [Theory]
    [MemberData(nameof(DevicesKernelsAndLayouts))]
    public void ProductMatchesReference(DeviceKind kind, string variant, GemmLayout layout)
    {
        var backend = fixture.Get(kind);
        var ops = Ops(kind, variant);
        var seed = 100;
        foreach (var (m, n, k) in Shapes)
        {
            foreach (var (withBias, accumulate, alpha) in Options)
            {
                var a = TestData.Normal(seed++, m * k);
                var b = TestData.Normal(seed++, k * n);
                var bias = TestData.Normal(seed++, n);
                var c0 = TestData.Normal(seed++, m * n);
                using var da = backend.Upload(a);
                using var db = backend.Upload(b);
                using var dbias = backend.Upload(bias);
                using var dc = backend.Upload(c0);
                ops.Gemm(backend.ComputeStream, dc.View, da.View, db.View, m, n, k, layout, accumulate,
                    withBias ? dbias.View : default, alpha);
                var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, layout, alpha,
                    withBias ? TestData.ToDouble(bias) : null, accumulate ? TestData.ToDouble(c0) : null);
                TensorAssert.Close(expected, backend.Download(dc), 2e-6 * k + 1e-6, 1e-5,
                    $"{variant} {layout} m={m} n={n} k={k} bias={withBias} accumulate={accumulate} alpha={alpha}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(DevicesKernelsAndLayouts))]
    public void BatchedProductMatchesReference(DeviceKind kind, string variant, GemmLayout layout)
    {
        var backend = fixture.Get(kind);
        var ops = Ops(kind, variant);
        var seed = 200;
        foreach (var batch in new[] { 1, 3 })
        {
            foreach (var (m, n, k) in new[] { (3, 7, 22), (22, 7, 3), (1, 1, 1), (7, 22, 3) })
            {
                foreach (var (accumulate, alpha) in new[] { (false, 1f), (true, 0.5f) })
                {
                    var a = TestData.Normal(seed++, batch * m * k);
                    var b = TestData.Normal(seed++, batch * k * n);
                    var c0 = TestData.Normal(seed++, batch * m * n);
                    using var da = backend.Upload(a);
                    using var db = backend.Upload(b);
                    using var dc = backend.Upload(c0);
                    ops.GemmBatched(backend.ComputeStream, dc.View, da.View, db.View, batch, m, n, k, layout, accumulate, alpha);
                    var expected = GemmReference.GemmBatched(TestData.ToDouble(a), TestData.ToDouble(b), batch, m, n, k, layout,
                        alpha, accumulate ? TestData.ToDouble(c0) : null);
                    TensorAssert.Close(expected, backend.Download(dc), 2e-6 * k + 1e-6, 1e-5,
                        $"{variant} {layout} batch={batch} m={m} n={n} k={k} accumulate={accumulate}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(DevicesKernelsAndLayouts))]
    public void ExtremeMagnitudesKeepRelativeAccuracy(DeviceKind kind, string variant, GemmLayout layout)
    {
        var backend = fixture.Get(kind);
        var ops = Ops(kind, variant);
        const int m = 22, n = 7, k = 127;
        // Positive operands, so no cancellation: every element must be accurate relative to itself.
        foreach (var (scale, seed) in new[] { (1e15, 1), (1e-12, 2) })
        {
            var a = TestData.Uniform(seed, m * k, 0.5 * scale, scale);
            var b = TestData.Uniform(seed + 10, k * n, 0.5 * scale, scale);
            var bias = TestData.Uniform(seed + 20, n, 0.5 * scale * scale, scale * scale);
            var c0 = TestData.Uniform(seed + 30, m * n, 0.5 * scale * scale, scale * scale);
            using var da = backend.Upload(a);
            using var db = backend.Upload(b);
            using var dbias = backend.Upload(bias);
            using var dc = backend.Upload(c0);
            ops.Gemm(backend.ComputeStream, dc.View, da.View, db.View, m, n, k, layout, accumulate: true, dbias.View, alpha: 0.5f);
            var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, layout, 0.5,
                TestData.ToDouble(bias), TestData.ToDouble(c0));
            TensorAssert.Close(expected, backend.Download(dc), 0, 1e-5, $"{variant} {layout} scale={scale}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesKernelsAndLayouts))]
    public void OverwriteIgnoresGarbageInOutput(DeviceKind kind, string variant, GemmLayout layout)
    {
        var backend = fixture.Get(kind);
        var ops = Ops(kind, variant);
        const int m = 7, n = 3, k = 22;
        var a = TestData.Normal(7, m * k);
        var b = TestData.Normal(8, k * n);
        var garbage = Enumerable.Repeat(float.NaN, m * n).ToArray();
        using var da = backend.Upload(a);
        using var db = backend.Upload(b);
        using var dc = backend.Upload(garbage);
        ops.Gemm(backend.ComputeStream, dc.View, da.View, db.View, m, n, k, layout);
        var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, layout);
        TensorAssert.Close(expected, backend.Download(dc), 1e-4, 1e-5, $"{variant} {layout}");
    }

    [Theory]
    [MemberData(nameof(DevicesAndKernels))]
    public void TransposedLayoutsGiveTheGradientsOfTheProduct(DeviceKind kind, string variant)
    {
        var backend = fixture.Get(kind);
        var ops = Ops(kind, variant);
        // y = x . W + b with x (m, k), W (k, n): dx = dy . W^T (NT), dW += x^T . dy (TN), db += colsum(dy).
        foreach (var (m, n, k) in new[] { (3, 7, 22), (22, 7, 3), (1, 3, 1) })
        {
            var a = TestData.ToDouble(TestData.Normal(m * 31 + k, m * k));
            var b = TestData.ToDouble(TestData.Normal(m * 37 + k, k * n));
            var bias = TestData.ToDouble(TestData.Normal(m * 41 + k, n));
            var dC = TestData.ToDouble(TestData.Normal(m * 43 + k, m * n));
            var dB0 = TestData.Normal(m * 47 + k, k * n);
            var dBias0 = TestData.Normal(m * 53 + k, n);

            var fdA = FiniteDifference.Gradient(x => FiniteDifference.Dot(GemmReference.Gemm(x, b, m, n, k, GemmLayout.NN, 1, bias), dC), a);
            var fdB = FiniteDifference.Gradient(x => FiniteDifference.Dot(GemmReference.Gemm(a, x, m, n, k, GemmLayout.NN, 1, bias), dC), b);
            var fdBias = FiniteDifference.Gradient(x => FiniteDifference.Dot(GemmReference.Gemm(a, b, m, n, k, GemmLayout.NN, 1, x), dC), bias);
            var (refA, refB) = GemmReference.GemmBackward(a, b, dC, m, n, k);

            using var da = backend.Upload(ToFloat(a));
            using var db = backend.Upload(ToFloat(b));
            using var ddC = backend.Upload(ToFloat(dC));
            using var dA = backend.Upload(Enumerable.Repeat(float.NaN, m * k).ToArray());
            using var dB = backend.Upload(dB0);
            using var dBias = backend.Upload(dBias0);
            ops.Gemm(backend.ComputeStream, dA.View, ddC.View, db.View, m, k, n, GemmLayout.NT);
            ops.Gemm(backend.ComputeStream, dB.View, da.View, ddC.View, k, n, m, GemmLayout.TN, accumulate: true);
            ops.BiasBackward(backend.ComputeStream, dBias.View, ddC.View, m, n);
            var gotA = backend.Download(dA);
            var gotB = backend.Download(dB);
            var gotBias = backend.Download(dBias);

            var what = $"{variant} m={m} n={n} k={k}";
            TensorAssert.Close(fdA, gotA, 1e-4, 1e-4, $"dA vs finite differences, {what}");
            TensorAssert.Close(refA, gotA, 1e-5, 1e-5, $"dA vs reference, {what}");
            TensorAssert.Close(Add(dB0, fdB), gotB, 1e-4, 1e-4, $"dB vs finite differences, {what}");
            TensorAssert.Close(Add(dB0, refB), gotB, 1e-5, 1e-5, $"dB vs reference, {what}");
            TensorAssert.Close(Add(dBias0, fdBias), gotBias, 1e-4, 1e-4, $"dBias vs finite differences, {what}");
            TensorAssert.Close(GemmReference.BiasBackward(dC, m, n, TestData.ToDouble(dBias0)), gotBias, 1e-5, 1e-5, $"dBias vs reference, {what}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BiasBackwardAccumulatesColumnSums(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GemmOps>();
        var seed = 300;
        foreach (var rows in new[] { 1, 3, 7, 22, 127 })
        {
            foreach (var n in new[] { 1, 3, 7, 22, 127, 65 })
            {
                var dOut = TestData.Normal(seed++, rows * n);
                var start = TestData.Normal(seed++, n);
                using var ddOut = backend.Upload(dOut);
                using var dBias = backend.Upload(start);
                ops.BiasBackward(backend.ComputeStream, dBias.View, ddOut.View, rows, n);
                var expected = GemmReference.BiasBackward(TestData.ToDouble(dOut), rows, n, TestData.ToDouble(start));
                TensorAssert.Close(expected, backend.Download(dBias), 1e-5 * Math.Sqrt(rows), 1e-6, $"rows={rows} n={n}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BiasBackwardIsDeterministicAndHandlesLargeValues(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GemmOps>();
        const int rows = 127, n = 22;
        var dOut = TestData.Uniform(5, rows * n, 1e30, 2e30);
        var start = TestData.Uniform(6, n, 1e30, 2e30);
        using var ddOut = backend.Upload(dOut);
        using var first = backend.Upload(start);
        using var second = backend.Upload(start);
        ops.BiasBackward(backend.ComputeStream, first.View, ddOut.View, rows, n);
        ops.BiasBackward(backend.ComputeStream, second.View, ddOut.View, rows, n);
        var expected = GemmReference.BiasBackward(TestData.ToDouble(dOut), rows, n, TestData.ToDouble(start));
        var got = backend.Download(first);
        TensorAssert.Close(expected, got, 0, 1e-5);
        TensorAssert.Equal(got, backend.Download(second), "second run");
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<GemmOps>();
        var s = backend.ComputeStream;
        using var a = backend.Zeros<float>(3 * 4);
        using var b = backend.Zeros<float>(4 * 5);
        using var c = backend.Zeros<float>(3 * 5);
        using var bias = backend.Zeros<float>(4);

        var e = Assert.Throws<ArgumentException>(() => ops.Gemm(s, c.View, a.View, b.View, 3, 5, 5, GemmLayout.NN));
        Assert.Contains("'a' has 12 elements, expected 15 for shape (3, 5)", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Gemm(s, c.View, a.View, b.View, 3, 5, 4, GemmLayout.NN, bias: bias.View));
        Assert.Contains("'bias' has 4 elements, expected 5", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Gemm(s, c.View, a.View, b.View.SubView(0, 16), 3, 4, 4, GemmLayout.NT));
        Assert.Contains("'c' has 15 elements, expected 12 for shape (3, 4)", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.GemmBatched(s, c.View, a.View, b.View, 2, 3, 5, 4, GemmLayout.NN));
        Assert.Contains("for 2 matrices", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Gemm(s, c.View, a.View, b.View, 0, 5, 4, GemmLayout.NN));
        e = Assert.Throws<ArgumentException>(() => ops.BiasBackward(s, bias.View, c.View, 3, 5));
        Assert.Contains("'dBias' has 4 elements, expected 5", e.Message);

        using var square = backend.Zeros<float>(2 * 9);
        e = Assert.Throws<ArgumentException>(() =>
            ops.Gemm(s, square.View.SubView(4, 9), square.View.SubView(0, 9), square.View.SubView(9, 9), 3, 3, 3, GemmLayout.NN));
        Assert.Contains("must not alias", e.Message);
        // Adjacent, non-overlapping views of one buffer are fine.
        ops.Gemm(s, square.View.SubView(9, 9), square.View.SubView(0, 9), square.View.SubView(0, 9), 3, 3, 3, GemmLayout.NN);
        s.Synchronize();
    }

    [Fact]
    public void KernelsCompileToPtxWithoutExternalCalls()
    {
        // Checks the CUDA path on machines without a GPU; a separate context, since a failed compile can poison one.
        using var context = Context.Create(builder => builder.Optimize(OptimizationLevel.O2).EnableAlgorithms());
        using var ptx = new PTXBackend(context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_70, nvvmAPI: null!);
        foreach (var name in new[] { nameof(GemmKernels.GemmKernel), nameof(GemmKernels.GemmDirectKernel), nameof(GemmKernels.BiasBackwardKernel) })
        {
            var method = typeof(GemmKernels).GetMethod(name, BindingFlags.Public | BindingFlags.Static)!;
            var compiled = (PTXCompiledKernel)ptx.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), KernelSpecialization.Empty);
            var externs = Regex.Matches(compiled.PTXAssembly, @"\.extern\s+\.func\s*(?:\([^)]*\)\s*)?(\w+)")
                .Select(match => match.Groups[1].Value)
                .Where(f => f is not ("vprintf" or "__assertfail"))
                .ToList();
            Assert.True(externs.Count == 0, $"{name} calls unresolved functions: {string.Join(", ", externs)}");
            // The 4 x 4 register blocks must stay in registers: a spill to local memory would show as local loads.
            Assert.DoesNotContain("ld.local", compiled.PTXAssembly);
        }
    }

    private static float[] ToFloat(double[] values) => values.Select(v => (float)v).ToArray();

    private static double[] Add(float[] start, double[] delta)
    {
        var result = new double[delta.Length];
        for (var i = 0; i < result.Length; i++) result[i] = start[i] + delta[i];
        return result;
    }
}

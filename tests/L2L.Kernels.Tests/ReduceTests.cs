// Whole-array sum and sum of squares (deterministic two-stage reductions) and scaling, against double references.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class ReduceTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly int[] Lengths = [0, 1, 3, 7, 22, 127, 1001, 100_003];

    [Theory]
    [MemberData(nameof(Devices))]
    public void SumsMatchReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ReduceOps>();
        using var partials = backend.Zeros<float>(ReduceOps.PartialsLength(backend));
        using var result = backend.Zeros<float>(1);
        foreach (var n in Lengths)
        {
            var x = TestData.Normal(n, n, 2.0, 0.25);
            using var dx = backend.Upload(x);
            var sum = 0.0;
            var sumAbs = 0.0;
            var sumSq = 0.0;
            foreach (var v in x) { sum += v; sumAbs += Math.Abs(v); sumSq += (double)v * v; }

            Fill(backend, result, 123f); // overwritten, not accumulated
            ops.Sum(backend.ComputeStream, result.View, dx.View, partials.View);
            TensorAssert.Close([sum], backend.Download(result), 1e-6 * sumAbs + 1e-7, 0, $"sum n={n}");

            Fill(backend, result, 123f);
            ops.SumOfSquares(backend.ComputeStream, result.View, dx.View, partials.View);
            TensorAssert.Close([sumSq], backend.Download(result), 1e-7, 1e-6, $"sum of squares n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void SumsAreDeterministicAndHandleLargeValues(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ReduceOps>();
        const int n = 5003;
        var x = TestData.Normal(1, n, 1e15); // squares near 1e30, sum of squares near float's range
        using var dx = backend.Upload(x);
        using var partials = backend.Zeros<float>(ReduceOps.PartialsLength(backend));
        using var result = backend.Zeros<float>(1);
        var runs = new float[3];
        for (var i = 0; i < runs.Length; i++)
        {
            ops.SumOfSquares(backend.ComputeStream, result.View, dx.View, partials.View);
            runs[i] = backend.Download(result)[0];
        }
        Assert.All(runs, r => Assert.Equal(BitConverter.SingleToInt32Bits(runs[0]), BitConverter.SingleToInt32Bits(r)));
        TensorAssert.Close([x.Sum(v => (double)v * v)], runs.AsSpan(0, 1), 0, 1e-5, "sum of squares of 1e15-scale values");
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ScaleMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ReduceOps>();
        foreach (var n in Lengths)
        {
            var x = TestData.Normal(n + 1, n, 5.0);
            using var dx = backend.Upload(x);
            ops.Scale(backend.ComputeStream, dx.View, -0.375f);
            TensorAssert.Close(x.Select(v => v * -0.375).ToArray(), backend.Download(dx), 0, 1e-7, $"n={n}");
        }
    }

    [Fact]
    public void ShortScratchIsRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<ReduceOps>();
        Assert.True(ReduceOps.PartialsLength(backend) >= 1);
        using var x = backend.Zeros<float>(10);
        using var result = backend.Zeros<float>(1);
        using var partials = backend.Zeros<float>(ReduceOps.PartialsLength(backend) - 1);
        var e = Assert.Throws<ArgumentException>(() => ops.Sum(backend.ComputeStream, result.View, x.View, partials.View));
        Assert.Contains("partials", e.Message);
    }

    private static void Fill(Backend backend, DeviceBuffer<float> buffer, float value)
    {
        buffer.View.CopyFromCPU(backend.ComputeStream, new[] { value });
        backend.ComputeStream.Synchronize();
    }
}

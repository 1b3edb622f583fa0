// Device AdamW and SGD over several steps against double references of PyTorch's update rules.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class OptimizerTests(BackendFixture fixture)
{
    private const int Steps = 5;

    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly int[] Lengths = [1, 3, 7, 22, 127, 1001];

    [Theory]
    [MemberData(nameof(Devices))]
    public void AdamWMatchesReferenceOverSeveralSteps(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<OptimizerOps>();
        const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
        foreach (var weightDecay in new[] { 0f, 0.1f })
        {
            foreach (var n in Lengths)
            {
                var param = TestData.Normal(n, n);
                var p = TestData.ToDouble(param);
                var m = new double[n];
                var v = new double[n];
                using var dParam = backend.Upload(param);
                using var dM = backend.Zeros<float>(n);
                using var dV = backend.Zeros<float>(n);
                for (var step = 1; step <= Steps; step++)
                {
                    // Gradients of mixed scales, including tiny ones where eps matters.
                    var grad = TestData.Normal(100 * n + step, n, step % 2 == 0 ? 1e-3 : 1.0);
                    if (n > 2) grad[2] = 0f;
                    using var dGrad = backend.Upload(grad);
                    var bc1 = 1f - MathF.Pow(beta1, step);
                    var bc2 = 1f - MathF.Pow(beta2, step);
                    ops.AdamW(backend.ComputeStream, dParam.View, dGrad.View, dM.View, dV.View, lr, beta1, beta2, eps, weightDecay, bc1, bc2);
                    OptimizerReference.AdamW(p, TestData.ToDouble(grad), m, v, step, lr, beta1, beta2, eps, weightDecay);
                    var what = $"n={n} wd={weightDecay} step={step}";
                    TensorAssert.Close(p, backend.Download(dParam), 1e-6, 1e-5, "param " + what);
                    TensorAssert.Close(m, backend.Download(dM), 1e-7, 1e-5, "m " + what);
                    TensorAssert.Close(v, backend.Download(dV), 1e-10, 1e-5, "v " + what);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void SgdMatchesReferenceOverSeveralSteps(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<OptimizerOps>();
        foreach (var weightDecay in new[] { 0f, 0.01f })
        {
            foreach (var n in Lengths)
            {
                var param = TestData.Normal(n + 1, n);
                var p = TestData.ToDouble(param);
                using var dParam = backend.Upload(param);
                for (var step = 1; step <= Steps; step++)
                {
                    var grad = TestData.Normal(200 * n + step, n);
                    using var dGrad = backend.Upload(grad);
                    ops.Sgd(backend.ComputeStream, dParam.View, dGrad.View, 0.1f, weightDecay);
                    OptimizerReference.Sgd(p, TestData.ToDouble(grad), 0.1, weightDecay);
                }
                TensorAssert.Close(p, backend.Download(dParam), 1e-6, 1e-5, $"n={n} wd={weightDecay}");
            }
        }
    }

    [Fact]
    public void MismatchedLengthsAndBadBiasCorrectionsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<OptimizerOps>();
        using var a = backend.Zeros<float>(3);
        using var b = backend.Zeros<float>(4);
        var s = backend.ComputeStream;
        var e = Assert.Throws<ArgumentException>(() => ops.AdamW(s, a.View, a.View, b.View, a.View, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 0.1f, 0.001f));
        Assert.Contains("m", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.AdamW(s, a.View, a.View, a.View, a.View, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 0f, 0f));
        Assert.Throws<ArgumentException>(() => ops.Sgd(s, a.View, b.View, 0.1f, 0f));
    }
}

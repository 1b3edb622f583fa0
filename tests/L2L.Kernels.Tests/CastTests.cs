// FP32 <-> FP16 casts: every half value back to float, and float to half rounded to nearest even, against System.Half.
using ILGPU;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;
using Half = ILGPU.Half;

namespace L2L.Kernels.Tests;

public sealed class CastTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    [Theory]
    [MemberData(nameof(Devices))]
    public void EveryHalfConvertsToFloatExactly(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var bits = Enumerable.Range(0, 1 << 16).Select(i => (ushort)i).ToArray();
        using var input = backend.Upload(bits.Select(Interop.IntAsFloat).ToArray());
        using var output = backend.Zeros<float>(bits.Length);
        backend.Get<CastOps>().ToFloat(backend.ComputeStream, output.View, input.View);
        var actual = backend.Download(output);
        for (var i = 0; i < bits.Length; i++)
        {
            var expected = (float)BitConverter.UInt16BitsToHalf(bits[i]);
            if (float.IsNaN(expected))
                Assert.True(float.IsNaN(actual[i]), $"half 0x{bits[i]:X4} should give NaN, got {actual[i]}");
            else
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual[i]),
                    $"half 0x{bits[i]:X4}: got {actual[i]:G9}, expected {expected:G9}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void FloatToHalfRoundsToNearestEven(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, 65504f, -65504f, 65519.996f, 65520f, -65520f, 1e5f, float.MaxValue,
            float.PositiveInfinity, float.NegativeInfinity, float.Epsilon,
            6.1035156e-05f,                    // smallest normal half
            5.9604645e-08f, 2.9802322e-08f,   // smallest subnormal, and half of it (ties to zero)
            2.9802326e-08f, 8.940697e-08f,    // just above the tie, and 1.5 subnormal units (ties to 2)
            1f + 1f / 2048, 1f + 3f / 2048,   // ties at 1: to even 1, and up to 1 + 2^-9
            1f + 1f / 2048 + 1f / 65536, 2047.5f, 2048.5f, 4095f, 4097f, 6.097555e-05f, 3e-5f, -3e-5f,
        };
        // Random values over every exponent FP16 can reach, and beyond.
        var rng = new Random(11);
        for (var i = 0; i < 4000; i++)
            values.Add((float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-30, 18))));
        // Every tie between adjacent normal halves in [1, 2) and in the subnormal range.
        for (var m = 0; m < 1024; m += 37)
        {
            values.Add(BitConverter.Int32BitsToSingle(0x3F800000 + (m << 13) + 0x1000));
            values.Add(m * 5.9604645e-08f + 2.9802322e-08f);
        }
        var input = values.ToArray();
        using var dIn = backend.Upload(input);
        using var dOut = backend.Zeros<Half>(input.Length);
        backend.Get<CastOps>().ToHalf(backend.ComputeStream, dOut.View, dIn.View);
        var actual = backend.Download(dOut);
        for (var i = 0; i < input.Length; i++)
        {
            var expected = BitConverter.HalfToUInt16Bits((System.Half)input[i]);
            var got = Interop.FloatAsInt(actual[i]);
            Assert.True(expected == got, $"{input[i]:G9}: got 0x{got:X4}, expected 0x{expected:X4}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void NaNStaysNaNAndRoundTripIsExact(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<CastOps>();
        foreach (var n in new[] { 1, 3, 7, 22, 127 })
        {
            // Values already representable in FP16 survive the round trip unchanged.
            var x = TestData.Normal(n, n, 100.0).Select(v => (float)(System.Half)v).ToArray();
            x[0] = float.NaN;
            using var dx = backend.Upload(x);
            using var half = backend.Zeros<Half>(n);
            using var back = backend.Zeros<float>(n);
            ops.ToHalf(backend.ComputeStream, half.View, dx.View);
            ops.ToFloat(backend.ComputeStream, back.View, half.View);
            var y = backend.Download(back);
            Assert.True(float.IsNaN(y[0]));
            TensorAssert.Equal(x.AsSpan(1).ToArray(), y.AsSpan(1).ToArray(), $"n={n}");
        }
    }

    [Fact]
    public void MismatchedLengthsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var f = backend.Zeros<float>(3);
        using var h = backend.Zeros<Half>(4);
        Assert.Throws<ArgumentException>(() => backend.Get<CastOps>().ToHalf(backend.ComputeStream, h.View, f.View));
        Assert.Throws<ArgumentException>(() => backend.Get<CastOps>().ToFloat(backend.ComputeStream, f.View, h.View));
    }
}

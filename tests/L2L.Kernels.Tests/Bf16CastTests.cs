// FP32 <-> BF16 casts: every BF16 value widens exactly, and FP32 narrows to the nearest BF16 (ties to even) as an
// independent double-precision search for the nearest neighbour says, on the device and on the host.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class Bf16CastTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    /// <summary>
    /// The BF16 nearest to <paramref name="x"/> by comparing distances in double to the two BF16 neighbours that
    /// bracket it (truncation and the next value up in magnitude); ties go to the even one. Beyond the largest finite
    /// BF16 the upper neighbour is 2^128, which rounds to infinity exactly as IEEE rounding does.
    /// </summary>
    internal static ushort ReferenceBits(float x)
    {
        var bits = BitConverter.SingleToUInt32Bits(x);
        var lower = (ushort)(bits >> 16);
        var upper = (ushort)(lower + 1);
        double Value(ushort b) => (b & 0x7F80) == 0x7F80
            ? ((b & 0x8000) != 0 ? -1 : 1) * Math.Pow(2, 128)
            : BitConverter.UInt32BitsToSingle((uint)b << 16);
        var dLower = Math.Abs(x - Value(lower));
        var dUpper = Math.Abs(Value(upper) - x);
        if (dLower < dUpper) return lower;
        if (dUpper < dLower) return upper;
        return (lower & 1) == 0 ? lower : upper;
    }

    internal static float[] Cases()
    {
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, float.MaxValue, -float.MaxValue, float.PositiveInfinity, float.NegativeInfinity,
            float.Epsilon, -float.Epsilon, 1.1754944e-38f, 1e-40f, -3e-39f, 3.3895314e38f, 3.3961775e38f, 65504f, 65520f, 1e5f,
            1f + 1f / 256, 1f + 3f / 256, 1f + 1f / 256 + 1f / 65536, 255.5f, 256.5f, 257f,
        };
        var rng = new Random(5);
        for (var i = 0; i < 20000; i++)
            values.Add(BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)));
        // Exact ties between neighbours, with even and odd lower halves, normal and subnormal.
        for (uint m = 0; m < 128; m += 5)
        {
            values.Add(BitConverter.UInt32BitsToSingle(0x3F800000u + (m << 16) + 0x8000u));
            values.Add(BitConverter.UInt32BitsToSingle((m << 16) + 0x8000u));
            values.Add(BitConverter.UInt32BitsToSingle(0xC2000000u + (m << 16) + 0x8000u));
        }
        return values.Where(v => !float.IsNaN(v)).ToArray();
    }

    [Fact]
    public void HostConversionMatchesTheNearestNeighbourReference()
    {
        foreach (var x in Cases())
            Assert.True(ReferenceBits(x) == Bf16.RoundBits(x), $"{x:G9} (0x{BitConverter.SingleToUInt32Bits(x):X8}): got 0x{Bf16.RoundBits(x):X4}, expected 0x{ReferenceBits(x):X4}");
        Assert.True(float.IsNaN(Bf16.FromSingle(float.NaN).ToSingle()));
        // A NaN whose payload lives only in the dropped half must not become infinity.
        Assert.True(float.IsNaN(Bf16.FromSingle(BitConverter.UInt32BitsToSingle(0x7F800001u)).ToSingle()));
        Assert.True(float.IsNaN(Bf16.FromSingle(BitConverter.UInt32BitsToSingle(0xFF800001u)).ToSingle()));
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void FloatToBf16RoundsToNearestEven(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var input = Cases().Append(float.NaN).Append(BitConverter.UInt32BitsToSingle(0x7F800001u)).ToArray();
        using var dIn = backend.Upload(input);
        using var dOut = backend.Zeros<Bf16>(input.Length);
        backend.Get<CastOps>().ToBf16(backend.ComputeStream, dOut.View, dIn.View);
        var actual = backend.Download(dOut);
        for (var i = 0; i < input.Length; i++)
        {
            if (float.IsNaN(input[i]))
            {
                Assert.True(float.IsNaN(actual[i].ToSingle()), $"NaN 0x{BitConverter.SingleToUInt32Bits(input[i]):X8} gave 0x{actual[i].Bits:X4}");
                continue;
            }
            var expected = ReferenceBits(input[i]);
            Assert.True(expected == actual[i].Bits, $"{input[i]:G9}: got 0x{actual[i].Bits:X4}, expected 0x{expected:X4}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void EveryBf16WidensExactly(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var all = Enumerable.Range(0, 1 << 16).Select(i => new Bf16((ushort)i)).ToArray();
        using var dIn = backend.Upload(all);
        using var dOut = backend.Zeros<float>(all.Length);
        backend.Get<CastOps>().ToFloat(backend.ComputeStream, dOut.View, dIn.View);
        var actual = backend.Download(dOut);
        for (var i = 0; i < all.Length; i++)
        {
            var expected = BitConverter.UInt32BitsToSingle((uint)i << 16);
            if (float.IsNaN(expected))
                Assert.True(float.IsNaN(actual[i]));
            else
                Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(actual[i]), $"0x{i:X4}: got {actual[i]:G9}");
        }
    }

    [Fact]
    public void MismatchedLengthsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var f = backend.Zeros<float>(3);
        using var b = backend.Zeros<Bf16>(4);
        Assert.Throws<ArgumentException>(() => backend.Get<CastOps>().ToBf16(backend.ComputeStream, b.View, f.View));
        Assert.Throws<ArgumentException>(() => backend.Get<CastOps>().ToFloat(backend.ComputeStream, f.View, b.View));
    }
}

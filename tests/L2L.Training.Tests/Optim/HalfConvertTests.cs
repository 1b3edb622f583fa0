// The vectorised FP16 conversions against .NET's scalar casts: every half value, and float values chosen to hit
// each rounding case (ties, subnormals, overflow to infinity) plus many random bit patterns.
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests.Optim;

public sealed class HalfConvertTests
{
    [Fact]
    public void EveryHalfWidensLikeTheCast()
    {
        var all = new Half[65536];
        for (var i = 0; i < all.Length; i++) all[i] = BitConverter.UInt16BitsToHalf((ushort)i);
        var widened = new float[all.Length];
        HalfConvert.ToSingle(all, widened);
        for (var i = 0; i < all.Length; i++)
        {
            var expected = (float)all[i];
            if (Half.IsNaN(all[i]))
            {
                Assert.True(float.IsNaN(widened[i]) && float.IsNaN(HalfConvert.ToSingle(all[i])), $"0x{i:X4} is NaN");
                continue;
            }
            Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(widened[i]), $"0x{i:X4}: vector {widened[i]:G9}, cast {expected:G9}");
            Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(HalfConvert.ToSingle(all[i])), $"0x{i:X4}: scalar");
        }
    }

    [Fact]
    public void FloatsNarrowLikeTheCast()
    {
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, 65504f, 65519.99f, 65520f, 65536f, 1e10f, float.MaxValue, float.PositiveInfinity, float.NegativeInfinity,
            float.NaN, -float.NaN, BitConverter.UInt32BitsToSingle(0x7F80_0001u), BitConverter.UInt32BitsToSingle(0xFFC0_1234u),
            6.1035156e-05f, 6.0975552e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 1e-30f, float.Epsilon,
        };
        // Every half value, the midpoints between neighbours (ties go to even) and one float ulp either side.
        for (var i = 0; i < 0x7C00; i++)
        {
            var lo = (float)BitConverter.UInt16BitsToHalf((ushort)i);
            var hi = (float)BitConverter.UInt16BitsToHalf((ushort)(i + 1));
            var mid = (float)(((double)lo + hi) / 2);
            foreach (var x in new[] { lo, mid, MathF.BitDecrement(mid), MathF.BitIncrement(mid) })
            {
                values.Add(x);
                values.Add(-x);
            }
        }
        var rng = new Random(17);
        for (var i = 0; i < 1_000_000; i++) values.Add(BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)));
        for (var i = 0; i < 1_000_000; i++) values.Add((float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 20))));

        var source = values.ToArray();
        var narrowed = new Half[source.Length];
        HalfConvert.ToHalf(source, narrowed);
        for (var i = 0; i < source.Length; i++)
        {
            var expected = (Half)source[i];
            var scalar = HalfConvert.ToHalf(source[i]);
            if (float.IsNaN(source[i]))
            {
                Assert.True(Half.IsNaN(narrowed[i]) && Half.IsNaN(scalar), $"NaN 0x{BitConverter.SingleToUInt32Bits(source[i]):X8}");
                Assert.Equal(BitConverter.HalfToUInt16Bits(narrowed[i]), BitConverter.HalfToUInt16Bits(scalar));
                continue;
            }
            Assert.True(BitConverter.HalfToUInt16Bits(expected) == BitConverter.HalfToUInt16Bits(narrowed[i]),
                $"{source[i]:G9} (0x{BitConverter.SingleToUInt32Bits(source[i]):X8}): vector 0x{BitConverter.HalfToUInt16Bits(narrowed[i]):X4}, cast 0x{BitConverter.HalfToUInt16Bits(expected):X4}");
            Assert.True(BitConverter.HalfToUInt16Bits(expected) == BitConverter.HalfToUInt16Bits(scalar), $"{source[i]:G9}: scalar");
        }
    }

    [Fact]
    public void MismatchedLengthsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => HalfConvert.ToHalf(new float[3], new Half[2]));
        Assert.Throws<ArgumentException>(() => HalfConvert.ToSingle(new Half[3], new float[4]));
    }
}

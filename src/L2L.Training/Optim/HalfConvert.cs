// FP32 <-> FP16 conversion with Vector<T> integer and float operations (.NET has no F16C intrinsics), plus scalar
// mirrors of the same steps, so that vector body and scalar tail of an optimizer pass produce identical bits.
using System.Numerics;
using System.Runtime.CompilerServices;

namespace L2L.Training.Optim;

/// <summary>
/// Round-to-nearest-even conversions between <see cref="float"/> and <see cref="Half"/> that agree bit for bit with
/// the casts <c>(Half)x</c> and <c>(float)h</c> for every non-NaN value; a NaN converts to the canonical quiet NaN of
/// the same sign.
/// </summary>
public static class HalfConvert
{
    private const uint SignMask = 0x8000_0000u;
    private const uint AbsMask = 0x7FFF_FFFFu;
    private const uint SingleInfinityBits = 0x7F80_0000u;
    private const uint SingleExponentMask = 0x7F80_0000u;
    // 65520 is the midpoint between Half.MaxValue and 65536; it and everything above round to infinity.
    private const uint MaxHalfBelowInfinityBits = 0x477F_F000u;
    // 2^-14, the smallest normal Half: below it the rounding offset stops following the exponent.
    private const uint MinNormalHalfAsSingleBits = 0x3880_0000u;
    private const uint Exponent13 = 0x0680_0000u;
    private const uint Exponent126 = 0x3F00_0000u;
    private const uint HalfQuietNaN = 0x7E00u;
    private const uint HalfSignMask = 0x8000u;
    private const uint HalfAbsMask = 0x7FFFu;
    private const uint HalfExponentMask = 0x7C00u;
    private const uint ExponentRebias = 0x3800_0000u; // (127 - 15) << 23
    private const uint SubnormalBias = 0x0080_0000u;

    /// <summary>Converts <paramref name="source"/> to FP16 into <paramref name="destination"/> (same length).</summary>
    public static unsafe void ToHalf(ReadOnlySpan<float> source, Span<Half> destination)
    {
        if (destination.Length != source.Length)
            throw new ArgumentException($"destination has {destination.Length} elements, source {source.Length}.", nameof(destination));
        fixed (float* s = source)
        fixed (Half* d = destination)
        {
            var dst = (ushort*)d;
            nint i = 0;
            nint n = source.Length;
            if (Vector.IsHardwareAccelerated)
            {
                var w = Vector<float>.Count;
                for (; i <= n - 2 * w; i += 2 * w)
                    StoreHalf(dst + i, Vector.Load(s + i), Vector.Load(s + i + w));
            }
            for (; i < n; i++) dst[i] = ToHalfBits(s[i]);
        }
    }

    /// <summary>Widens <paramref name="source"/> to FP32 into <paramref name="destination"/> (same length).</summary>
    public static unsafe void ToSingle(ReadOnlySpan<Half> source, Span<float> destination)
    {
        if (destination.Length != source.Length)
            throw new ArgumentException($"destination has {destination.Length} elements, source {source.Length}.", nameof(destination));
        fixed (Half* s = source)
        fixed (float* d = destination)
        {
            var src = (ushort*)s;
            nint i = 0;
            nint n = source.Length;
            if (Vector.IsHardwareAccelerated)
            {
                var w = Vector<float>.Count;
                for (; i <= n - 2 * w; i += 2 * w)
                {
                    LoadHalf(src + i, out var lo, out var hi);
                    lo.Store(d + i);
                    hi.Store(d + i + w);
                }
            }
            for (; i < n; i++) d[i] = ToSingle(src[i]);
        }
    }

    /// <summary>Scalar FP32 to FP16, the same steps as the vector path.</summary>
    public static Half ToHalf(float value) => BitConverter.UInt16BitsToHalf(ToHalfBits(value));

    /// <summary>Scalar FP16 to FP32, the same steps as the vector path.</summary>
    public static float ToSingle(Half value) => ToSingle(BitConverter.HalfToUInt16Bits(value));

    /// <summary>Loads <c>2 * Vector&lt;float&gt;.Count</c> halves and widens them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void LoadHalf(ushort* source, out Vector<float> lo, out Vector<float> hi)
    {
        Vector.Widen(Vector.Load(source), out Vector<uint> a, out Vector<uint> b);
        lo = ToSingle(a);
        hi = ToSingle(b);
    }

    /// <summary>Narrows two vectors to halves and stores <c>2 * Vector&lt;float&gt;.Count</c> of them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void StoreHalf(ushort* destination, Vector<float> lo, Vector<float> hi)
    {
        var mask = new Vector<uint>(0xFFFFu);
        Vector.Narrow(ToHalfBits(lo) & mask, ToHalfBits(hi) & mask).Store(destination);
    }

    /// <summary>FP32 to FP16 bits in 32-bit lanes (upper 16 bits are garbage; callers truncate).</summary>
    /// <remarks>Adding a power of two whose exponent sits 13 above the value's own makes the FP32 adder round the
    /// significand to FP16 precision with round-to-nearest-even (subnormals included); the integer steps then
    /// re-bias the exponent. The same scheme as .NET's scalar <c>(Half)float</c>, with min/max done on the bits.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<uint> ToHalfBits(Vector<float> value)
    {
        var bits = Vector.AsVectorUInt32(value);
        var sign = Vector.ShiftRightLogical(bits & new Vector<uint>(SignMask), 16);
        var abs = bits & new Vector<uint>(AbsMask);
        var isNaN = Vector.AsVectorUInt32(Vector.GreaterThan(Vector.AsVectorInt32(abs), new Vector<int>((int)SingleInfinityBits)));
        abs = Vector.Min(abs, new Vector<uint>(MaxHalfBelowInfinityBits));
        var offset = (Vector.Max(abs, new Vector<uint>(MinNormalHalfAsSingleBits)) & new Vector<uint>(SingleExponentMask)) + new Vector<uint>(Exponent13);
        var rounded = Vector.AsVectorUInt32(Vector.AsVectorSingle(abs) + Vector.AsVectorSingle(offset)) - new Vector<uint>(Exponent126);
        var result = rounded + Vector.ShiftRightLogical(rounded, 13);
        result = Vector.ConditionalSelect(isNaN, new Vector<uint>(HalfQuietNaN), result);
        return result | sign;
    }

    /// <summary>Scalar mirror of <see cref="ToHalfBits(Vector{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort ToHalfBits(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        var sign = (bits & SignMask) >> 16;
        var abs = bits & AbsMask;
        var isNaN = (int)abs > (int)SingleInfinityBits;
        abs = Math.Min(abs, MaxHalfBelowInfinityBits);
        var offset = (Math.Max(abs, MinNormalHalfAsSingleBits) & SingleExponentMask) + Exponent13;
        var rounded = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(abs) + BitConverter.UInt32BitsToSingle(offset)) - Exponent126;
        var result = rounded + (rounded >> 13);
        result = isNaN ? HalfQuietNaN : result;
        return (ushort)(result | sign);
    }

    /// <summary>FP16 bits (zero-extended to 32-bit lanes) to FP32.</summary>
    /// <remarks>Normal values only need the exponent re-biased. A subnormal is built as <c>2^-14 * (1 + f)</c> and
    /// then <c>2^-14</c> is subtracted, which is exact; infinities and NaNs get the exponent re-biased twice,
    /// which saturates it.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<float> ToSingle(Vector<uint> half)
    {
        var sign = Vector.ShiftLeft(half & new Vector<uint>(HalfSignMask), 16);
        var exponent = half & new Vector<uint>(HalfExponentMask);
        var isSubnormal = Vector.Equals(exponent, Vector<uint>.Zero);
        var isSpecial = Vector.Equals(exponent, new Vector<uint>(HalfExponentMask));
        var bits = Vector.ShiftLeft(half & new Vector<uint>(HalfAbsMask), 13) + new Vector<uint>(ExponentRebias);
        bits += (isSpecial & new Vector<uint>(ExponentRebias)) + (isSubnormal & new Vector<uint>(SubnormalBias));
        var value = Vector.AsVectorSingle(bits) - Vector.AsVectorSingle(isSubnormal & new Vector<uint>(MinNormalHalfAsSingleBits));
        return Vector.AsVectorSingle(Vector.AsVectorUInt32(value) | sign);
    }

    /// <summary>Scalar mirror of <see cref="ToSingle(Vector{uint})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float ToSingle(ushort half)
    {
        uint h = half;
        var sign = (h & HalfSignMask) << 16;
        var exponent = h & HalfExponentMask;
        var isSubnormal = exponent == 0 ? ~0u : 0u;
        var isSpecial = exponent == HalfExponentMask ? ~0u : 0u;
        var bits = ((h & HalfAbsMask) << 13) + ExponentRebias;
        bits += (isSpecial & ExponentRebias) + (isSubnormal & SubnormalBias);
        var value = BitConverter.UInt32BitsToSingle(bits) - BitConverter.UInt32BitsToSingle(isSubnormal & MinNormalHalfAsSingleBits);
        return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(value) | sign);
    }
}

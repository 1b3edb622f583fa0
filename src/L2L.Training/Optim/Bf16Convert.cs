// FP32 -> BF16 (round to nearest even) with Vector<T> integer operations, and the scalar mirror, for the host
// optimizers' 16-bit copy of the updated weights; both give the bits of L2L.Kernels.Bf16.RoundBits.
using System.Numerics;
using System.Runtime.CompilerServices;

namespace L2L.Training.Optim;

/// <summary>
/// Round-to-nearest-even narrowing of FP32 to BF16 (the upper 16 bits of an FP32), bit-identical to the device
/// kernels' <see cref="L2L.Kernels.Bf16.RoundBits"/>: add <c>0x7FFF</c> plus the lowest kept bit and keep the upper
/// half; a NaN keeps its sign and upper payload and gets the quiet bit.
/// </summary>
public static class Bf16Convert
{
    private const uint AbsMask = 0x7FFF_FFFFu;
    private const uint SingleInfinityBits = 0x7F80_0000u;

    /// <summary>Converts <paramref name="source"/> to BF16 into <paramref name="destination"/> (same length).</summary>
    public static unsafe void ToBf16(ReadOnlySpan<float> source, Span<L2L.Kernels.Bf16> destination)
    {
        if (destination.Length != source.Length)
            throw new ArgumentException($"destination has {destination.Length} elements, source {source.Length}.", nameof(destination));
        fixed (float* s = source)
        fixed (L2L.Kernels.Bf16* d = destination)
        {
            var dst = (ushort*)d;
            nint i = 0;
            nint n = source.Length;
            if (Vector.IsHardwareAccelerated)
            {
                var w = Vector<float>.Count;
                for (; i <= n - 2 * w; i += 2 * w)
                    Store(dst + i, Vector.Load(s + i), Vector.Load(s + i + w));
            }
            for (; i < n; i++) dst[i] = ToBits(s[i]);
        }
    }

    /// <summary>Widens <paramref name="source"/> to FP32 into <paramref name="destination"/> (same length; exact: the bits become the upper half).</summary>
    public static unsafe void ToSingle(ReadOnlySpan<L2L.Kernels.Bf16> source, Span<float> destination)
    {
        if (destination.Length != source.Length)
            throw new ArgumentException($"destination has {destination.Length} elements, source {source.Length}.", nameof(destination));
        fixed (L2L.Kernels.Bf16* s = source)
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
                    Vector.Widen(Vector.Load(src + i), out Vector<uint> lo, out Vector<uint> hi);
                    Vector.AsVectorSingle(Vector.ShiftLeft(lo, 16)).Store(d + i);
                    Vector.AsVectorSingle(Vector.ShiftLeft(hi, 16)).Store(d + i + w);
                }
            }
            for (; i < n; i++) d[i] = BitConverter.UInt32BitsToSingle((uint)src[i] << 16);
        }
    }

    /// <summary>Narrows two vectors to BF16 and stores <c>2 * Vector&lt;float&gt;.Count</c> of them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Store(ushort* destination, Vector<float> lo, Vector<float> hi) =>
        Vector.Narrow(ToBits(lo), ToBits(hi)).Store(destination);

    /// <summary>FP32 to BF16 bits in 32-bit lanes (upper 16 bits zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<uint> ToBits(Vector<float> value)
    {
        var bits = Vector.AsVectorUInt32(value);
        var isNaN = Vector.AsVectorUInt32(Vector.GreaterThan(Vector.AsVectorInt32(bits & new Vector<uint>(AbsMask)), new Vector<int>((int)SingleInfinityBits)));
        var upper = Vector.ShiftRightLogical(bits, 16);
        var rounded = Vector.ShiftRightLogical(bits + new Vector<uint>(0x7FFFu) + (upper & Vector<uint>.One), 16);
        return Vector.ConditionalSelect(isNaN, upper | new Vector<uint>(0x0040u), rounded);
    }

    /// <summary>Scalar mirror of <see cref="ToBits(Vector{float})"/>: the device kernels' own rounding.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort ToBits(float value) => L2L.Kernels.Bf16.RoundBits(value);
}

/// <summary>
/// Writes the 16-bit copy of updated weights a host optimizer produces in its update pass; a struct type argument, so
/// the JIT specialises each optimizer kernel per copy format and the FP16 instantiation is the code it always was.
/// </summary>
internal unsafe interface ICopyWriter
{
    static abstract void Store(ushort* destination, Vector<float> lo, Vector<float> hi);
    static abstract ushort Bits(float value);
}

internal readonly unsafe struct HalfCopy : ICopyWriter
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(ushort* destination, Vector<float> lo, Vector<float> hi) => HalfConvert.StoreHalf(destination, lo, hi);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Bits(float value) => HalfConvert.ToHalfBits(value);
}

internal readonly unsafe struct Bf16Copy : ICopyWriter
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(ushort* destination, Vector<float> lo, Vector<float> hi) => Bf16Convert.Store(destination, lo, hi);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Bits(float value) => Bf16Convert.ToBits(value);
}

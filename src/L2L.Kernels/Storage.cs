// Storage types of mixed precision: BF16 (the upper half of an FP32) and the load/store codecs that let one
// generic kernel read and write FP32, BF16 or FP16 buffers while it computes in FP32 registers.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using Half = ILGPU.Half;

namespace L2L.Kernels;

/// <summary>
/// A bfloat16 value: the upper 16 bits of an IEEE binary32 (sign, 8 exponent bits, 7 mantissa bits), so it has the
/// FP32 range (including subnormals, infinities and NaN) with 8 significant bits (unit roundoff 2^-8). Conversion from
/// FP32 rounds to nearest, ties to even; a NaN stays a (quiet) NaN of the same sign. Plain integer arithmetic, so the
/// same bits come out of every backend, the CPU accelerator and OpenCL included, and on the host.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 2)]
public readonly struct Bf16 : IEquatable<Bf16>
{
    /// <summary>Wraps raw bits (the upper 16 bits of the FP32 encoding).</summary>
    public Bf16(ushort bits) => Bits = bits;

    /// <summary>The raw bits.</summary>
    public readonly ushort Bits;

    /// <summary>The value as FP32 (exact).</summary>
    public float ToSingle() => Interop.IntAsFloat((uint)Bits << 16);

    /// <summary><paramref name="value"/> rounded to the nearest BF16, ties to even.</summary>
    public static Bf16 FromSingle(float value) => new(RoundBits(value));

    /// <summary>
    /// The BF16 bits nearest to <paramref name="value"/>, ties to even: adding <c>0x7FFF</c> plus the lowest kept bit
    /// carries into the kept half exactly when the dropped half is above the midpoint, or at it with an odd kept half
    /// (a carry into the exponent is the correctly rounded value; the largest finite values round up to infinity).
    /// NaN keeps its sign and gets the quiet bit, so no payload can round to infinity.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort RoundBits(float value)
    {
        uint bits = Interop.FloatAsInt(value);
        if ((bits & 0x7FFFFFFFu) > 0x7F800000u)
            return (ushort)((bits >> 16) | 0x0040u);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>Rounds to nearest even.</summary>
    public static explicit operator Bf16(float value) => FromSingle(value);

    /// <summary>Exact widening.</summary>
    public static explicit operator float(Bf16 value) => value.ToSingle();

    /// <inheritdoc/>
    public bool Equals(Bf16 other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Bf16 other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits;

    /// <summary>Bitwise equality.</summary>
    public static bool operator ==(Bf16 left, Bf16 right) => left.Equals(right);

    /// <summary>Bitwise inequality.</summary>
    public static bool operator !=(Bf16 left, Bf16 right) => !left.Equals(right);

    /// <inheritdoc/>
    public override string ToString() => ToSingle().ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>
/// How a generic kernel loads and stores elements of type <typeparamref name="T"/>: widen to FP32 on load, round on
/// store. Implementations are empty structs used as type arguments and called on <c>default</c>, so each kernel
/// instantiation compiles to straight-line conversions (nothing at all for FP32).
/// </summary>
/// <typeparam name="T">The element type of the buffer.</typeparam>
public interface IStorage<T> where T : unmanaged
{
    /// <summary>The element widened to FP32 (exact for every storage type here).</summary>
    float ToFloat(T value);

    /// <summary>The element nearest to <paramref name="value"/> (round to nearest, ties to even).</summary>
    T FromFloat(float value);
}

/// <summary>FP32 storage: both conversions are the identity, so an FP32 instantiation computes exactly what a plain FP32 kernel does.</summary>
public readonly struct Fp32Storage : IStorage<float>
{
    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float ToFloat(float value) => value;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float FromFloat(float value) => value;
}

/// <summary>BF16 storage (<see cref="Bf16"/>): a shift on load, round to nearest even on store.</summary>
public readonly struct Bf16Storage : IStorage<Bf16>
{
    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float ToFloat(Bf16 value) => Interop.IntAsFloat((uint)value.Bits << 16);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Bf16 FromFloat(float value) => new(Bf16.RoundBits(value));
}

/// <summary>
/// FP16 storage (<see cref="Half"/>): exact widening on load; on store round to nearest even by bit manipulation
/// (<see cref="CastKernels.FloatToHalfBits"/>), so every backend agrees; beyond 65504 (from the midpoint 65520) it
/// gives infinity.
/// </summary>
public readonly struct Fp16Storage : IStorage<Half>
{
    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float ToFloat(Half value) => (float)value;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Half FromFloat(float value) => Interop.IntAsFloat(CastKernels.FloatToHalfBits(value));
}

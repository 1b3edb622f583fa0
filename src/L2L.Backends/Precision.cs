// The device storage precision of a run: FP32 everywhere, or 16-bit values on the device and the bus with FP32 on the host.
using ILGPU;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends;

/// <summary>
/// How weights, activations, the stash and boundary gradients are stored on the device and carried over the bus.
/// Kernels always compute and accumulate in FP32; the host keeps FP32 master weights and optimizer state in every case.
/// </summary>
public enum Precision
{
    /// <summary>Everything FP32.</summary>
    Fp32,
    /// <summary>BF16 (the upper 16 bits of an FP32, round to nearest even) on the device and the bus.</summary>
    Bf16,
    /// <summary>IEEE FP16 (<see cref="Half"/>) on the device and the bus.</summary>
    Fp16,
}

/// <summary>Names, sizes and storage types of <see cref="Precision"/>.</summary>
public static class Precisions
{
    /// <summary>Bytes per stored element: 4 or 2.</summary>
    public static int ElementSize(this Precision precision) => precision == Precision.Fp32 ? sizeof(float) : sizeof(ushort);

    /// <summary>The name used on the command line, in checkpoints and in metrics: <c>fp32</c>, <c>bf16</c> or <c>fp16</c>.</summary>
    public static string Name(this Precision precision) => precision switch
    {
        Precision.Fp32 => "fp32",
        Precision.Bf16 => "bf16",
        Precision.Fp16 => "fp16",
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, null),
    };

    /// <summary>Whether values are stored in 16 bits.</summary>
    public static bool Is16Bit(this Precision precision) => precision != Precision.Fp32;

    /// <summary>Parses <c>fp32</c>, <c>bf16</c> or <c>fp16</c> (case-insensitive); null when it is none of them.</summary>
    public static Precision? TryParse(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        "fp32" => Precision.Fp32,
        "bf16" => Precision.Bf16,
        "fp16" => Precision.Fp16,
        _ => null,
    };

    /// <summary>The storage element type of <paramref name="precision"/>: <see cref="float"/>, <see cref="Bf16"/> or <see cref="Half"/>.</summary>
    public static Type StorageType(this Precision precision) => precision switch
    {
        Precision.Fp32 => typeof(float),
        Precision.Bf16 => typeof(Bf16),
        Precision.Fp16 => typeof(Half),
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, null),
    };

    /// <summary>The precision whose storage element type is <typeparamref name="T"/>.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not float, <see cref="Bf16"/> or <see cref="Half"/>.</exception>
    public static Precision Of<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? Precision.Fp32
        : typeof(T) == typeof(Bf16) ? Precision.Bf16
        : typeof(T) == typeof(Half) ? Precision.Fp16
        : throw new NotSupportedException($"{typeof(T).Name} is not a storage type (float, Bf16 or Half).");
}

// FP32 to a run's storage type (float, Bf16 or Half) on the host, rounding as the device's cast kernels do.
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends;

/// <summary>
/// Host narrowing for code that is generic over the storage type <c>T</c> (float, <see cref="Bf16"/> or <see cref="Half"/>),
/// rounding to nearest even exactly as the device's <see cref="Ops.CastOps.FromFloat{T}"/> does.
/// </summary>
public static class StorageCasts
{
    /// <summary><c>output[i] = (T)input[i]</c> on the host, rounding to nearest even as the device does.</summary>
    public static void Narrow<T>(ReadOnlySpan<float> input, Span<T> output) where T : unmanaged
    {
        if (input.Length != output.Length) throw new ArgumentException("The spans differ in length.");
        if (typeof(T) == typeof(float))
        {
            input.CopyTo(System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(output));
        }
        else if (typeof(T) == typeof(Bf16))
        {
            var o = System.Runtime.InteropServices.MemoryMarshal.Cast<T, Bf16>(output);
            for (var i = 0; i < input.Length; i++) o[i] = new Bf16(Bf16.RoundBits(input[i]));
        }
        else if (typeof(T) == typeof(Half))
        {
            var o = System.Runtime.InteropServices.MemoryMarshal.Cast<T, Half>(output);
            var storage = default(Fp16Storage);
            for (var i = 0; i < input.Length; i++) o[i] = storage.FromFloat(input[i]);
        }
        else throw new NotSupportedException($"{typeof(T).Name} is not a storage type.");
    }
}

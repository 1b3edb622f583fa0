// How the generic launchers pick the FP32, BF16 or FP16 kernels from their element type.
using System.Runtime.CompilerServices;
using ILGPU;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Helpers of the launchers' generic entry points (<c>Forward&lt;T&gt;</c> and the like): the element type selects the
/// kernels, FP32 always taking the very kernels of the FP32 overloads, so FP32 results are the same bits either way.
/// </summary>
internal static class StorageDispatch
{
    /// <summary>Picks the object for <typeparamref name="T"/>: float, <see cref="Bf16"/> or <see cref="Half"/>; the 16-bit ones are loaded on first use.</summary>
    public static TResult Pick<T, TResult, TBf16, THalf>(object fp32, Lazy<TBf16> bf16, Lazy<THalf> fp16) where T : unmanaged =>
        typeof(T) == typeof(float) ? (TResult)fp32
        : typeof(T) == typeof(Bf16) ? (TResult)(object)bf16.Value!
        : typeof(T) == typeof(Half) ? (TResult)(object)fp16.Value!
        : throw Unsupported<T>();

    /// <summary>The error for an element type that is not a storage type.</summary>
    public static NotSupportedException Unsupported<T>() =>
        new($"{typeof(T).Name} is not a device storage type: the launchers take float, Bf16 or ILGPU.Half.");

    /// <summary>The same view typed as <typeparamref name="TTo"/>, which must be <typeparamref name="TFrom"/> (a no-op the JIT removes).</summary>
    public static ArrayView<TTo> Same<TFrom, TTo>(ArrayView<TFrom> view) where TFrom : unmanaged where TTo : unmanaged =>
        typeof(TFrom) == typeof(TTo) ? Unsafe.As<ArrayView<TFrom>, ArrayView<TTo>>(ref view)
        : throw new InvalidOperationException($"A view of {typeof(TFrom).Name} is not a view of {typeof(TTo).Name}.");
}

// Launchers for the casts of mixed precision: FP32 <-> FP16 and FP32 <-> BF16.
using ILGPU;
using Half = ILGPU.Half;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>
/// FP32 &lt;-&gt; <see cref="Half"/> and FP32 &lt;-&gt; <see cref="Bf16"/> casts, round to nearest even on every backend;
/// kernels loaded once per accelerator (the BF16 ones on first use).
/// </summary>
public sealed class CastOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<float>> _toHalf;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Half>> _toFloat;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public CastOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _toHalf = _accelerator.LoadKernel<ArrayView<Half>, ArrayView<float>>(CastKernels.ToHalfKernel);
        _toFloat = _accelerator.LoadKernel<ArrayView<float>, ArrayView<Half>>(CastKernels.ToFloatKernel);
        _toBf16 = new(() => _accelerator.LoadKernel<ArrayView<Bf16>, ArrayView<float>>(
            CastKernels.ConvertGenericKernel<float, Fp32Storage, Bf16, Bf16Storage>));
        _fromBf16 = new(() => _accelerator.LoadKernel<ArrayView<float>, ArrayView<Bf16>>(
            CastKernels.ConvertGenericKernel<Bf16, Bf16Storage, float, Fp32Storage>));
    }

    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<Bf16>, ArrayView<float>>> _toBf16;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Bf16>>> _fromBf16;

    /// <summary>
    /// <c>output = input</c> rounded to the storage type <typeparamref name="T"/> (to nearest even; for float, a copy), same
    /// length: an FP32 buffer's working copy in the device precision.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void FromFloat<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<float> input) where T : unmanaged
    {
        Check.SameLength(output, input, nameof(input));
        if (typeof(T) == typeof(float)) { if (output.Length != 0) StorageDispatch.Same<T, float>(output).CopyFrom(s, input); }
        else if (typeof(T) == typeof(Bf16)) ToBf16(s, StorageDispatch.Same<T, Bf16>(output), input);
        else if (typeof(T) == typeof(Half)) ToHalf(s, StorageDispatch.Same<T, Half>(output), input);
        else throw StorageDispatch.Unsupported<T>();
    }

    /// <summary><c>output = (float)input</c> from the storage type <typeparamref name="T"/> (exact; for float, a copy), same length.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void ToFloat<T>(AcceleratorStream s, ArrayView<float> output, ArrayView<T> input) where T : unmanaged
    {
        Check.SameLength(output, input, nameof(input));
        if (typeof(T) == typeof(float)) { if (output.Length != 0) output.CopyFrom(s, StorageDispatch.Same<T, float>(input)); }
        else if (typeof(T) == typeof(Bf16)) ToFloat(s, output, StorageDispatch.Same<T, Bf16>(input));
        else if (typeof(T) == typeof(Half)) ToFloat(s, output, StorageDispatch.Same<T, Half>(input));
        else throw StorageDispatch.Unsupported<T>();
    }

    /// <summary><c>output = (bf16)input</c>, same length; round to nearest even, NaN stays NaN, the FP32 range is kept.</summary>
    public void ToBf16(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _toBf16.Value(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>output = (float)input</c>, same length; exact.</summary>
    public void ToFloat(AcceleratorStream s, ArrayView<float> output, ArrayView<Bf16> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _fromBf16.Value(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>output = (half)input</c>, same length; round to nearest even, overflow to infinity.</summary>
    public void ToHalf(AcceleratorStream s, ArrayView<Half> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _toHalf(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>output = (float)input</c>, same length; exact.</summary>
    public void ToFloat(AcceleratorStream s, ArrayView<float> output, ArrayView<Half> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _toFloat(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }
}

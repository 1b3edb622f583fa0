// Launchers for layer normalisation forward and backward, over FP32, BF16 or FP16 storage.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Layer normalisation over rows of (N, C), PyTorch semantics; kernels loaded once per accelerator. The
/// <see cref="Bf16"/> and <see cref="Half"/> overloads (kernels loaded on first use) take the activations, the
/// gradients flowing through and the LayerNorm weights in 16 bits, while the statistics (<c>mean</c>, <c>rstd</c>,
/// summed in FP32) and the parameter gradients (<c>dWeight</c>, <c>dBias</c>, accumulated over micro-batches) stay FP32.
/// </summary>
public sealed class LayerNormOps
{
    private readonly Accelerator _accelerator;
    private readonly Typed<float> _fp32;
    private readonly Lazy<Typed<Bf16>> _bf16;
    private readonly Lazy<Typed<Half>> _fp16;

    private sealed class Typed<T> where T : unmanaged
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<float>, ArrayView<float>,
            ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, float> Forward = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>,
            ArrayView<T>, ArrayView<float>, ArrayView<float>, int, int, int> BackwardInput = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<T>,
            ArrayView<T>, ArrayView<float>, ArrayView<float>, int, int, float> BackwardParams = null!;
    }

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public LayerNormOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        var a = _accelerator;
        _fp32 = new Typed<float>
        {
            Forward = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>(LayerNormKernels.LayerNormForwardKernel),
            BackwardInput = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(LayerNormKernels.LayerNormBackwardInputKernel),
            BackwardParams = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>(LayerNormKernels.LayerNormBackwardParamsKernel),
        };
        _bf16 = new(Load<Bf16, Bf16Storage>);
        _fp16 = new(Load<Half, Fp16Storage>);
    }

    private Typed<T> Load<T, S>() where T : unmanaged where S : struct, IStorage<T>
    {
        var a = _accelerator;
        return new Typed<T>
        {
            Forward = a.LoadKernel<ArrayView<T>, ArrayView<float>, ArrayView<float>,
                ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, float>(LayerNormKernels.LayerNormForwardGenericKernel<T, S>),
            BackwardInput = a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>,
                ArrayView<T>, ArrayView<float>, ArrayView<float>, int, int, int>(LayerNormKernels.LayerNormBackwardInputGenericKernel<T, S>),
            BackwardParams = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<T>,
                ArrayView<T>, ArrayView<float>, ArrayView<float>, int, int, float>(LayerNormKernels.LayerNormBackwardParamsGenericKernel<T, S>),
        };
    }

    /// <summary>
    /// <c>output (N, C) = (input - mean) * rstd * weight + bias</c> per row, with biased variance and
    /// <paramref name="eps"/> inside the square root; saves <c>mean</c> (N) and <c>rstd</c> (N) for the
    /// backward. <c>weight</c>, <c>bias</c> (C). <c>output</c> may alias <c>input</c>.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> weight, ArrayView<float> bias, int n, int c, float eps) =>
        Forward(_fp32, s, output, mean, rstd, input, weight, bias, n, c, eps);

    /// <summary>The forward in BF16 storage (statistics in FP32); as the FP32 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<Bf16> input, ArrayView<Bf16> weight, ArrayView<Bf16> bias, int n, int c, float eps) =>
        Forward(_bf16.Value, s, output, mean, rstd, input, weight, bias, n, c, eps);

    /// <summary>The forward in FP16 storage (statistics in FP32); as the FP32 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Half> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<Half> input, ArrayView<Half> weight, ArrayView<Half> bias, int n, int c, float eps) =>
        Forward(_fp16.Value, s, output, mean, rstd, input, weight, bias, n, c, eps);

    /// <summary>
    /// The backward of <c>Forward</c>: <c>dInput</c> (N, C) is assigned, or added to when
    /// <paramref name="accumulateInput"/> (for a residual stream); <c>dWeight</c> (C) and <c>dBias</c> (C)
    /// are always added to, summed over rows deterministically. <c>dOutput</c>, <c>input</c> (N, C);
    /// <c>weight</c> (C); <c>mean</c>, <c>rstd</c> (N) as saved by the forward. <c>dInput</c> may alias <c>dOutput</c>.
    /// The parameter gradients' row sums are multiplied by <paramref name="paramGradScale"/> before they are added
    /// (1, the default, leaves them unchanged bit for bit); <c>dInput</c> is never scaled.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dWeight, ArrayView<float> dBias,
        ArrayView<float> dOutput, ArrayView<float> input, ArrayView<float> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, bool accumulateInput, float paramGradScale = 1f) =>
        Backward(_fp32, s, dInput, dWeight, dBias, dOutput, input, weight, mean, rstd, n, c, accumulateInput, paramGradScale);

    /// <summary>The backward in BF16 storage, with FP32 <c>dWeight</c>, <c>dBias</c>, <c>mean</c>, <c>rstd</c>; as the FP32 overload.</summary>
    public void Backward(AcceleratorStream s, ArrayView<Bf16> dInput, ArrayView<float> dWeight, ArrayView<float> dBias,
        ArrayView<Bf16> dOutput, ArrayView<Bf16> input, ArrayView<Bf16> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, bool accumulateInput, float paramGradScale = 1f) =>
        Backward(_bf16.Value, s, dInput, dWeight, dBias, dOutput, input, weight, mean, rstd, n, c, accumulateInput, paramGradScale);

    /// <summary>The backward in FP16 storage, with FP32 <c>dWeight</c>, <c>dBias</c>, <c>mean</c>, <c>rstd</c>; as the FP32 overload.</summary>
    public void Backward(AcceleratorStream s, ArrayView<Half> dInput, ArrayView<float> dWeight, ArrayView<float> dBias,
        ArrayView<Half> dOutput, ArrayView<Half> input, ArrayView<Half> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, bool accumulateInput, float paramGradScale = 1f) =>
        Backward(_fp16.Value, s, dInput, dWeight, dBias, dOutput, input, weight, mean, rstd, n, c, accumulateInput, paramGradScale);

    /// <summary>The forward over the storage type <typeparamref name="T"/> (statistics in FP32); for float, the FP32 overload's kernels.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Forward<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<T> input, ArrayView<T> weight, ArrayView<T> bias, int n, int c, float eps) where T : unmanaged =>
        Forward(Kernels<T>(), s, output, mean, rstd, input, weight, bias, n, c, eps);

    /// <summary>The backward over the storage type <typeparamref name="T"/>, with FP32 <c>dWeight</c>, <c>dBias</c>, <c>mean</c>, <c>rstd</c>; for float, the FP32 overload's kernels.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Backward<T>(AcceleratorStream s, ArrayView<T> dInput, ArrayView<float> dWeight, ArrayView<float> dBias,
        ArrayView<T> dOutput, ArrayView<T> input, ArrayView<T> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, bool accumulateInput, float paramGradScale = 1f) where T : unmanaged =>
        Backward(Kernels<T>(), s, dInput, dWeight, dBias, dOutput, input, weight, mean, rstd, n, c, accumulateInput, paramGradScale);

    private Typed<T> Kernels<T>() where T : unmanaged => StorageDispatch.Pick<T, Typed<T>, Typed<Bf16>, Typed<Half>>(_fp32, _bf16, _fp16);

    private void Forward<T>(Typed<T> k, AcceleratorStream s, ArrayView<T> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<T> input, ArrayView<T> weight, ArrayView<T> bias, int n, int c, float eps) where T : unmanaged
    {
        Check.Positive(n, nameof(n));
        Check.Positive(c, nameof(c));
        var size = (long)n * c;
        Check.Length(output, size, nameof(output));
        Check.Length(input, size, nameof(input));
        Check.Length(mean, n, nameof(mean));
        Check.Length(rstd, n, nameof(rstd));
        Check.Length(weight, c, nameof(weight));
        Check.Length(bias, c, nameof(bias));
        if (!(eps >= 0f))
            throw new ArgumentOutOfRangeException(nameof(eps), eps, "'eps' must be non-negative.");
        k.Forward(s, RowLaunch.Rows(_accelerator, n, c), output, mean, rstd, input, weight, bias, n, c, eps);
    }

    private void Backward<T>(Typed<T> k, AcceleratorStream s, ArrayView<T> dInput, ArrayView<float> dWeight, ArrayView<float> dBias,
        ArrayView<T> dOutput, ArrayView<T> input, ArrayView<T> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, bool accumulateInput, float paramGradScale) where T : unmanaged
    {
        Check.Positive(n, nameof(n));
        Check.Positive(c, nameof(c));
        var size = (long)n * c;
        Check.Length(dInput, size, nameof(dInput));
        Check.Length(dOutput, size, nameof(dOutput));
        Check.Length(input, size, nameof(input));
        Check.Length(dWeight, c, nameof(dWeight));
        Check.Length(dBias, c, nameof(dBias));
        Check.Length(weight, c, nameof(weight));
        Check.Length(mean, n, nameof(mean));
        Check.Length(rstd, n, nameof(rstd));
        // The parameter gradients read dOutput, so they run first: dInput may then overwrite it in place.
        var group = Launch.GroupSize(_accelerator, 256);
        var tileWidth = Math.Min(32, group);
        var paramsConfig = new KernelConfig(RowLaunch.Groups(_accelerator, Launch.CeilDiv(c, tileWidth), group), group);
        k.BackwardParams(s, paramsConfig, dWeight, dBias, dOutput, input, mean, rstd, n, c, paramGradScale);
        k.BackwardInput(s, RowLaunch.Rows(_accelerator, n, c), dInput, dOutput, input, weight, mean, rstd, n, c,
            accumulateInput ? 1 : 0);
    }
}
